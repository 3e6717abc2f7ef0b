"""etcd versions: parsing, releases to avoid, which version changes etcd supports,
and when auth changes must wait. Pure (no I/O), so every rule is table-tested.

Each rule cites the upstream text it comes from; the guides are etcd's
"Upgrading etcd clusters and applications" pages (etcd-io/website,
content/en/docs/v3.X/upgrades/). When upstream moves a minimum (the 3.6 guide
raised its minimum 3.5 patch from 3.5.20 to 3.5.26 to 3.5.32), change the
table here, not the code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

POLICY = "https://etcd.io/docs/v3.6/upgrades/upgrading-etcd/"
GUIDE_3_5 = "https://etcd.io/docs/v3.5/upgrades/upgrade_3_5/"
GUIDE_3_6 = "https://etcd.io/docs/v3.6/upgrades/upgrade_3_6/"
GUIDE_3_7 = "https://etcd.io/docs/v3.7/upgrades/upgrade_3_7/"
AUTH_WAL = "https://github.com/etcd-io/etcd/pull/11943"

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str = ""  # "rc.1", "alpha.0": a pre-release (sorts as its release; shown)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")

    @property
    def minor_line(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def line(self) -> str:
        """"3.5": what etcd calls the cluster version, and what one guide covers."""
        return f"{self.major}.{self.minor}"


def parse_version(text: str) -> Version | None:
    """`3.5.30`, `v3.5.30`, `3.6.0-rc.1` (as Status, `/version` and `--version` say);
    `3.5.0` for etcd's cluster version `3.5.0`; None for anything else."""
    m = _VERSION.fullmatch(text.strip())
    if not m:
        return None
    return Version(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4) or "")


def binary_version(output: str) -> Version | None:
    """The server version in `etcd --version` output (3.4 to 3.6 print
    `etcd Version: 3.5.30`, then the Git SHA, Go version and OS/arch lines);
    None when no such line is there (not etcd, or a build that says nothing)."""
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "etcd Version":
            return parse_version(value)
    return None


# ---- releases to avoid ----------------------------------------------------------


@dataclass(frozen=True)
class KnownBad:
    first: Version
    last: Version
    problem: str
    reference: str
    fixed_in: str

    def covers(self, v: Version) -> bool:
        return self.first <= v <= self.last


KNOWN_BAD: tuple[KnownBad, ...] = (
    KnownBad(Version(3, 5, 0), Version(3, 5, 2),
             "after a crash, a committed transaction can stay unapplied on some members "
             "(data inconsistency); etcd advises against 3.5.0-3.5.2 in production",
             "https://github.com/etcd-io/etcd/issues/13766", "3.5.3"),
    KnownBad(Version(3, 5, 0), Version(3, 5, 2),
             "members that were rolled back to 3.4 and upgraded again diverge",
             "https://github.com/etcd-io/etcd/issues/13514", "3.5.3"),
)


def known_bad(v: Version | None) -> tuple[KnownBad, ...]:
    """The known-bad entries that cover `v` (none for an unknown version)."""
    return () if v is None else tuple(b for b in KNOWN_BAD if b.covers(v))


def bad_release_warning(v: Version | None) -> str:
    """One line naming every problem of `v`; "" for a release not in the table."""
    found = known_bad(v)
    if not found or v is None:
        return ""
    refs = ", ".join(b.reference for b in found)
    return (f"etcd {v} is a known-bad release: " + "; ".join(b.problem for b in found)
            + f" (fixed in {found[0].fixed_in}; {refs})")


# ---- which changes etcd supports ------------------------------------------------


@dataclass(frozen=True)
class UpgradeFacts:
    """What the guides' prerequisites ask about, as far as ckeetcd knows.

    `flags`: the etcd flags members run with besides ckeetcd's own (ckeetcd
    never sets --enable-v2 or an --experimental-* flag; `[etcd] extra_args` may).
    `v2_store_clean`: False when any member may ever have run with --enable-v2
    (the 3.6 guide then wants `etcdutl check v2store` on every member first).
    """

    flags: tuple[str, ...] = ()
    v2_store_clean: bool = True

    def flag_names(self) -> tuple[str, ...]:
        return tuple(f.split("=", 1)[0] for f in self.flags if f.startswith("-"))


def facts_from_flags(flags: Iterable[str]) -> UpgradeFacts:
    """Facts from the flags members run with: the v2 store may hold data only where
    --enable-v2 was set (ckeetcd itself never sets it)."""
    flags = tuple(flags)
    v2 = any(f == "--enable-v2" or (f.startswith("--enable-v2=")
                                    and f.split("=", 1)[1].lower() != "false") for f in flags)
    return UpgradeFacts(flags=flags, v2_store_clean=not v2)


@dataclass(frozen=True)
class Allowed:
    reason: str
    note: str = ""  # something the operator should know (a known-bad target, an auth hold)
    allowed: bool = True


@dataclass(frozen=True)
class Refused:
    reason: str
    allowed: bool = False


@dataclass(frozen=True)
class MinorStep:
    """One minor step up that a guide documents, and its prerequisites."""

    to: tuple[int, int]
    guide: str
    min_patch: int = 0  # the minimum patch of the `from` line the guide names
    removed_flags: tuple[str, ...] = ()  # flags the new minor no longer accepts
    removed_prefixes: tuple[str, ...] = ()  # ... by prefix
    needs_clean_v2: bool = False
    note: str = ""


STEPS: dict[tuple[int, int], MinorStep] = {
    # 3.5 guide: a rolling upgrade; "If your cluster enables auth, rolling upgrade
    # from 3.4 or older version isn't supported because 3.5 changes a format of
    # WAL entries related to auth" (etcd #11943). ckeetcd always runs RBAC, so it
    # writes no auth change while 3.4 and 3.5 members mix (auth_hold below).
    (3, 4): MinorStep((3, 5), GUIDE_3_5,
                      note="no auth change is written while members run 3.4 and 3.5 "
                           f"(auth WAL entries changed format in 3.5, {AUTH_WAL})"),
    # 3.6 guide, "Update 3.5": all 3.5 members on 3.5.32 or later; "V2 Store":
    # --enable-v2 removed, v2store free of custom data; "Flags removed".
    (3, 5): MinorStep((3, 6), GUIDE_3_6, min_patch=32,
                      removed_flags=("--enable-v2", "--experimental-enable-v2v3", "--proxy",
                                     "--proxy-failure-wait", "--proxy-refresh-interval",
                                     "--proxy-dial-timeout", "--proxy-write-timeout",
                                     "--proxy-read-timeout"),
                      needs_clean_v2=True),
    # 3.7 guide, "Update 3.6": 3.6.11 or later; "Flags removed": every
    # --experimental-* flag (replace it by its 3.6 equivalent first).
    (3, 6): MinorStep((3, 7), GUIDE_3_7, min_patch=11,
                      removed_prefixes=("--experimental-",)),
}


def upgrade_path(current: Version, target: Version,
                 facts: UpgradeFacts = UpgradeFacts()) -> Allowed | Refused:
    """Whether members running `current` may be restarted on `target`, and why.

    Patch changes within a minor keep the data format and are allowed both
    ways (upgrade policy, "Patch upgrade"); one minor up is allowed once its
    guide's prerequisites hold; skipping a minor is refused ("Upgrades that
    skip a minor version are not supported and will likely fail"); a minor
    downgrade is refused: the data is already in the newer format, and etcd's
    downgrade API, which ckeetcd does not drive, is the only way back in place.
    """
    bad = bad_release_warning(target)
    if current == target:
        return Allowed(f"already {target}", note=bad)
    if current.major != target.major:
        return Refused(f"{current} -> {target} changes the major version; etcd supports "
                       f"only patch and one-minor upgrades ({POLICY})")
    if current.minor == target.minor:
        way = "up" if target > current else "down"
        return Allowed(f"{current} -> {target}: a patch change within {target.line} ({way}); "
                       f"same data format ({POLICY}, \"Patch upgrade\")", note=bad)
    if target.minor < current.minor:
        return Refused(
            f"{current} -> {target} is a minor downgrade: members on {current.line} "
            f"have written data in the {current.line} format, which {target.line} cannot "
            f"be trusted to read; ckeetcd does not drive etcd's downgrade API. To go back, "
            f"rebuild the cluster from a snapshot taken on {target.line} with `ckeetcd "
            f"restore --from SNAPSHOT` on a {target.line} binary")
    if target.minor > current.minor + 1:
        return Refused(
            f"{current} -> {target} skips {current.major}.{current.minor + 1}: \"Upgrades that "
            f"skip a minor version are not supported and will likely fail\" ({POLICY}); "
            f"upgrade to the newest {current.major}.{current.minor + 1} first")
    step = STEPS.get(current.minor_line)
    if step is None or step.to != target.minor_line:
        return Refused(f"{current} -> {target}: ckeetcd knows no upgrade guide for "
                       f"{current.line} -> {target.line} ({POLICY})")
    if current.patch < step.min_patch:
        return Refused(
            f"{current} -> {target}: the {target.line} upgrade guide wants every "
            f"{current.line} member on {current.line}.{step.min_patch} or later first "
            f"({step.guide}); upgrade to the newest {current.line} patch release, then to "
            f"{target.line}")
    names = facts.flag_names()
    removed = [f for f in names if f in step.removed_flags
               or any(f.startswith(p) for p in step.removed_prefixes)]
    if removed:
        return Refused(f"{current} -> {target}: {target.line} no longer accepts "
                       f"{', '.join(dict.fromkeys(removed))} ({step.guide}, \"Flags "
                       "removed\"); drop them from [etcd] extra_args first")
    if step.needs_clean_v2 and not facts.v2_store_clean:
        return Refused(f"{current} -> {target}: members may hold v2 store data (--enable-v2 "
                       f"was set); run `etcdutl check v2store` on every member and clean it "
                       f"as {step.guide} (\"V2 Store\") says, then remove --enable-v2")
    return Allowed(f"{current} -> {target}: one minor up ({step.guide})",
                   note="; ".join(n for n in (step.note, bad) if n))


def cluster_path(running: Iterable[Version], target: Version,
                 facts: UpgradeFacts = UpgradeFacts()) -> Allowed | Refused:
    """upgrade_path for every version the members run: the first refusal, else
    the allowance of the lowest (a half-done upgrade resumes: its upgraded
    members are `already` there)."""
    versions = sorted(set(running))
    if not versions:
        return Refused("no member version known yet")
    verdicts = [upgrade_path(v, target, facts) for v in versions]
    refused = [v for v in verdicts if isinstance(v, Refused)]
    return refused[0] if refused else verdicts[0]


# ---- auth changes while minors mix --------------------------------------------------


def auth_hold(member_versions: Iterable[tuple[str, str]], cluster_version: str = "") -> str:
    """Why no user, role or permission may be written now; "" when they may.

    `member_versions` are (member, server version) pairs of the members that
    answered; `cluster_version` is etcd's `etcdcluster` ("3.4.0"). etcd keeps
    the cluster version at the lowest minor of all members and raises it only
    once every member answers with a higher one, so a lower cluster version
    also reveals a member on an older minor that is down right now.

    Auth WAL entries changed format in 3.5 (etcd #11943), and the 3.5 guide
    says a rolling upgrade from 3.4 with auth on is not supported; rolling
    upgrades work when no auth change is made meanwhile. So while more than one
    minor runs, auth writes wait until every member runs one minor.
    """
    seen: dict[tuple[int, int], list[str]] = {}
    for name, text in member_versions:
        v = parse_version(text)
        if v is not None:
            seen.setdefault(v.minor_line, []).append(f"{name} {v}")
    cv = parse_version(cluster_version)
    lines = set(seen)
    if cv is not None and lines and cv.minor_line < max(lines):
        lines.add(cv.minor_line)
    if len(lines) < 2:
        return ""
    shown = "; ".join(", ".join(sorted(seen[k])) for k in sorted(seen))
    cluster = f"; cluster version {cv.line}" if cv is not None else ""
    return (f"members run more than one etcd minor ({shown}{cluster}): no auth change is "
            f"written until all run one minor (auth WAL entries changed format in 3.5, "
            f"{AUTH_WAL}; {GUIDE_3_5})")


def auth_status_safe(member_versions: Iterable[tuple[str, str]], cluster_version: str) -> bool:
    """Whether an AuthStatus RPC may be sent: only once etcd's cluster version is 3.5
    or later and no member that answered runs an older minor.

    etcd 3.5 serves AuthStatus through raft (an InternalRaftRequest 3.4 does not
    know), and a 3.4 member that applies such an entry panics ("not implemented",
    in applierV3backend.Apply; seen here with 3.4.23 and 3.5.30, like etcd #12987);
    the entry stays in the log, so it panics again on every restart on 3.4. The
    cluster version is the lowest minor of all members, down ones included.
    """
    cv = parse_version(cluster_version)
    if cv is None or cv.minor_line < (3, 5):
        return False
    versions = [parse_version(v) for _, v in member_versions]
    return all(v is None or v.minor_line >= (3, 5) for v in versions)
