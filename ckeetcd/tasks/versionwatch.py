"""Side task: say it once when a member's etcd version, the cluster version or the
auth hold changes, and warn once per member and version about a known-bad release.

- `etcd_version` (info): a member seen on a version for the first time (a
  start, an upgrade), with the cluster version;
- `etcd_cluster_version` (info): etcd's cluster version changed (it rises once
  every member runs the new minor);
- `etcd_known_bad_release` (warning): a member runs a release of
  ckeetcd.core.etcdversions.KNOWN_BAD, with the problem and the upstream reference;
  again only if that member later runs another bad release;
- `auth_held` (warning) / `auth_hold_ended` (info): members run more than one
  minor, so no auth change is written (ensure-rbac and user pruning wait).

Status lines and the metrics say the same continuously; these are the edges.
"""

from __future__ import annotations

from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.etcdversions import bad_release_warning, known_bad, parse_version
from ckeetcd.core.model import Desired, Observed
from ckeetcd.tasks.edges import EdgeTask, say_edge


class VersionWatch(EdgeTask):
    name = "version-watch"

    def __init__(self, log: Any) -> None:
        self.log = log
        self.versions: dict[str, str] = {}
        self.cluster_version = ""
        self.warned: set[tuple[str, str]] = set()
        self.hold: str | None = None

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        if observed.members is None:
            return
        cv = observed.cluster_version
        for member, version in observed.member_versions():
            if self.versions.get(member) != version:
                self.versions[member] = version
                self.log.info("etcd_version", member=member, version=version,
                              cluster_version=cv or None)
            bad = known_bad(parse_version(version))
            if bad and (member, version) not in self.warned:
                self.warned.add((member, version))
                self.log.warning("etcd_known_bad_release", member=member, version=version,
                                 problem=bad_release_warning(parse_version(version)),
                                 references=[b.reference for b in bad],
                                 fixed_in=bad[0].fixed_in)
        if cv and cv != self.cluster_version:
            self.log.info("etcd_cluster_version", version=cv,
                          before=self.cluster_version or None)
            self.cluster_version = cv
        self.hold = say_edge(self.log, self.hold, observed.auth_hold(), "auth_held",
                             "auth_hold_ended")
