"""Replace a member on another host over SSH: the daemon vs etcdctl + ssh in a script.

A namespace lab (tests/netns.py: 5 hosts, each with sshd) runs a 3-member
cluster: h1 and h2 stay, the third member moves around h3 -> h4 -> h5 -> h3
..., each move to the host not in use. The daemon runs on h1 and reaches
every member over SSH (process member service).

- daemon: the config swaps the third member for the spare host; timed from
  the config write to the end of the daemon's promote-member op (its log).
- script: the daemon is stopped; a bash script on h1 does the seed's
  procedure with etcdctl and ssh: find the old member's ID, `ssh` to its
  host to stop etcd (SIGTERM, wait) and move its data aside, `member
  remove`, `member add --learner`, `ssh` to the new host to start etcd
  detached with the daemon's own command line, then `member promote` (sent
  to the leader, retried every 50 ms). The newcomer's certificates are put
  in place before t0 (issuing them is not what is measured). Each ssh call
  opens its own connection, as plain scripts do. Afterwards the config is
  updated and the daemon restarted (it adopts the member).

Repetitions alternate between the two. Run (root):
    .venv/bin/python bench/replace_ssh.py [--reps 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import lab_unavailable, summary, wait_for, write_result
from ckeetcd.support.files import write_atomic, write_private

from ckeetcd.core.config import load_config
from ckeetcd.nodes import MemberSpec
from ckeetcd.nodes.ssh import SSHRuntime
from ckeetcd.pki import load_ca, member_tls_files
from tests.multihost import ETCDCTL, MultiCluster
from tests.netns import Lab

HOSTS = ["h3", "h4", "h5"]


def ts(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def settle(c: MultiCluster, members: list[str]) -> None:
    c.wait_healthy(members)
    wait_for(lambda: [e for e in c.events("h1", "cycle")[-1:] if e["phase"] == "steady"],
             60, "a steady cycle")
    time.sleep(6)  # etcd refuses MemberAdd for 5 s after a voter (re)connects


def daemon_rep(c: MultiCluster, old: str, new: str) -> float:
    mark = c.mark("h1")
    t0 = time.time()
    c.write_config(["h1", "h2", new])
    done = wait_for(lambda: [e for e in c.events("h1", "op", mark)
                             if e["op"] == "promote-member" and e["outcome"] == "ok"],
                    120, f"{new} promoted")
    took = ts(done[0]) - t0
    settle(c, ["h1", "h2", new])
    return took


def leader_url(c: MultiCluster) -> str:
    st = c.status("h1")
    return next(m["client_url"] for m in st["members"] if m["leader"])


def script_rep(c: MultiCluster, lab: Lab, old: str, new: str, rep: int) -> float:
    c.kill_daemon("h1", signal.SIGTERM)
    config = load_config(c.config_path("h1"))
    rt = SSHRuntime(config.ssh, config.etcd, {})
    # the newcomer's certificates, in place before t0
    ca = load_ca(c.state_dir("h1") / "pki")
    tls = c.member_dir(new) / "tls"
    for name, content in member_tls_files(ca, new, lab.host(new).address,
                                          config.tls.member_cert_lifetime,
                                          ("localhost",)).items():
        (write_private if name.endswith(".key") else write_atomic)(tls / name, content)
    peers = [(m, f"https://{lab.host(m).address}:2380") for m in ("h1", "h2", new)]
    spec = MemberSpec(name=new, client_url=c.url(new), peer_url=peers[-1][1],
                      cluster_token=config.cluster.name, initial_cluster=tuple(peers),
                      initial_state="existing")
    start_cmd = " ".join(shlex.quote(a) for a in rt.command_line(spec))
    pki = c.state_dir("h1") / "pki"
    ctl = (f"{ETCDCTL} --cacert={pki}/ca.crt --cert={pki}/daemon-root.crt "
           f"--key={pki}/daemon-root.key --dial-timeout=3s --command-timeout=5s")
    ssh = (f"ssh -i {lab.identity} -o BatchMode=yes -o StrictHostKeyChecking=yes "
           f"-o UserKnownHostsFile={lab.known_hosts} root@")
    odir, ndir = c.member_dir(old), c.member_dir(new)
    leader = leader_url(c)
    script = f"""
set -euo pipefail
EPS={c.url('h1')},{c.url('h2')}
ID=$({ctl} --endpoints=$EPS member list | grep ", {old}, " | cut -d, -f1)
{ssh}{lab.host(old).address} 'read pid start < {odir}/etcd.pid; kill $pid;
  while kill -0 $pid 2>/dev/null; do sleep 0.05; done;
  mv {odir}/data {odir}/data.removed-script-{rep}; rm -f {odir}/etcd.pid'
{ctl} --endpoints=$EPS member remove $ID >/dev/null
NEW=$({ctl} --endpoints=$EPS member add {new} --learner \
  --peer-urls=https://{lab.host(new).address}:2380 |
  sed -n 's/^Member \\([0-9a-f]*\\) added.*/\\1/p')
{ssh}{lab.host(new).address} 'mkdir -p {ndir}/data && chmod 700 {ndir} {ndir}/data && cd {ndir} &&
  {{ setsid {start_cmd} </dev/null >>{ndir}/etcd.log 2>&1 & }};
  pid=$!; set -- $(sed "s/^.*) //" /proc/$pid/stat | cut -d" " -f1,20);
  echo "$pid $2" > {ndir}/etcd.pid'
until {ctl} --endpoints={leader} member promote $NEW >/dev/null 2>&1; do sleep 0.05; done
"""
    t0 = time.monotonic()
    r = lab.exec("h1", "bash", "-c", script, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    c.write_config(["h1", "h2", new])
    c.start_daemon("h1")
    settle(c, ["h1", "h2", new])
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    reason = lab_unavailable()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    daemon: list[float] = []
    script: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ckeetcd-replace-ssh-") as tmp:
        lab = Lab(Path(tmp) / "lab").start()
        try:
            c = MultiCluster(lab, Path(tmp) / "mc", ["h1", "h2", "h3"], ["h1"])
            c.start_daemon("h1")
            settle(c, ["h1", "h2", "h3"])
            third = "h3"
            for rep in range(2 * args.reps):
                new = HOSTS[(HOSTS.index(third) + 1) % len(HOSTS)]
                if rep % 2 == 0:
                    daemon.append(daemon_rep(c, third, new))
                    print(f"daemon {third}->{new}: {daemon[-1]:.3f}s")
                else:
                    script.append(script_rep(c, lab, third, new, rep))
                    print(f"script {third}->{new}: {script[-1]:.3f}s")
                third = new
        finally:
            lab.cleanup()
    ratio = (summary(daemon)["median"] / summary(script)["median"]) if daemon and script else 0
    write_result("replace_ssh", {
        "daemon_s": summary(daemon), "script_s": summary(script),
        "median_ratio_daemon_over_script": round(ratio, 3),
        "reps": {"daemon": [round(x, 4) for x in daemon],
                 "script": [round(x, 4) for x in script]},
    })
    print(f"daemon {summary(daemon)}\nscript {summary(script)}\nratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
