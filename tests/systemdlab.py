"""A real systemd 252 as PID 1 of a private PID + mount namespace, harmless to this machine.

The namespace shares the machine's file system and kernel: a systemd that
reached `sysinit.target` once ran `systemd-tmpfiles --boot --remove` and wiped
the machine's /tmp. So, in this order (`SETUP`, a shell script run by
`unshare --fork --pid --mount --mount-proc`):

1. `mount --make-rprivate /`: no mount made here propagates out;
2. a tmpfs on every place anything in the lab may write to (`WRITABLE`), a
   private /dev (a tmpfs with a few device nodes bound in: `DEVICES`),
   /etc replaced by a tmpfs copy of itself (so the lab may install into
   /etc/ckeetcd and /etc/systemd/system without touching the machine's),
   and the test's share folder bind-mounted read-only at /run/lab-share;
3. masks (symlinks to /dev/null) in /run/systemd/system for every target that
   would pull in the machine's boot units (`MASKED`), a drop-in
   `DefaultDependencies=no` for every service, and a private `lab.target`;
4. `exec env container=lab CKEETCD_SYSTEMDLAB=TAG /lib/systemd/systemd
   --system --unit=lab.target`.

With `dry_run=True` step 4 is replaced by printing `findmnt` and the masks
(`dry_run()`), so the recipe can be checked without starting systemd. The lab
is driven from outside with `nsenter -t PID -m -p ...` and ended by SIGKILL of
its PID 1 (the kernel then kills every process of the namespace). `sweep()`
kills the PID 1 of labs whose test process died (found by CKEETCD_SYSTEMDLAB
in their environment, naming the owner's PID), nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SYSTEMD = "/lib/systemd/systemd"
TAG_ENV = "CKEETCD_SYSTEMDLAB"
SHARE = "/run/lab-share"
WRITABLE = ("/tmp", "/dev/shm", "/var/tmp", "/var/log", "/var/lib", "/var/cache", "/opt",
            "/usr/local/bin", "/usr/local/lib", "/srv", "/mnt", "/media", "/home", "/root")
MASKED = ("sysinit.target", "basic.target", "sockets.target", "timers.target", "paths.target",
          "local-fs.target", "local-fs-pre.target", "remote-fs.target", "swap.target",
          "network.target", "network-online.target", "network-pre.target",
          "getty.target", "multi-user.target", "graphical.target", "default.target",
          "rescue.target", "emergency.target", "cryptsetup.target", "sysinit-pre.target",
          # journald runs (`journald()`), but without /dev/log or the kernel's audit feed
          "systemd-journald-dev-log.socket", "systemd-journald-audit.socket")
# The lab's /dev is a tmpfs with only these of the machine's device nodes bound in (and
# its ptys): nothing in the lab can create /dev/log or write the kernel log.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx")
_labs = itertools.count()

SETUP = r"""
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=0755 lab-run /run
mkdir -p /run/lab-etc {share}
cp -a /etc/. /run/lab-etc/
mount --bind /run/lab-etc /etc
mount -t tmpfs -o mode=0755 lab-units /etc/systemd/system
if [ -n "${{LAB_SHARE:-}}" ]; then
    mount --bind "$LAB_SHARE" {share} && mount -o remount,bind,ro {share}
fi
mkdir -p /run/lab-dev
mount -t tmpfs -o mode=0755,nosuid lab-dev /run/lab-dev
for n in {devices}; do
    touch /run/lab-dev/$n && mount --bind /dev/$n /run/lab-dev/$n
done
mkdir -p /run/lab-dev/pts /run/lab-dev/shm /run/lab-dev/mqueue
mount --rbind /dev/pts /run/lab-dev/pts
ln -s /proc/self/fd /run/lab-dev/fd
ln -s /proc/self/fd/0 /run/lab-dev/stdin
ln -s /proc/self/fd/1 /run/lab-dev/stdout
ln -s /proc/self/fd/2 /run/lab-dev/stderr
mount --move /run/lab-dev /dev
for d in {writable}; do
    if [ -d "$d" ]; then mount -t tmpfs -o mode=0755 lab-tmp "$d"; fi
done
chmod 1777 /tmp /var/tmp
chmod 0700 /root
mkdir -p /run/systemd/system/service.d
for t in {masked}; do ln -s /dev/null /run/systemd/system/$t; done
printf '[Unit]\nDefaultDependencies=no\n' > /run/systemd/system/service.d/lab-no-default-deps.conf
printf '[Unit]\nDescription=ckeetcd systemd lab\nDefaultDependencies=no\n' \
    > /run/systemd/system/lab.target
if [ "${{LAB_DRY_RUN:-}}" = 1 ]; then
    echo "== findmnt"; findmnt -rn -o TARGET,FSTYPE,PROPAGATION
    echo "== masks"
    for f in /run/systemd/system/*; do
        [ -L "$f" ] && echo "$(basename "$f") -> $(readlink "$f")"
    done
    echo "== dropins"; cat /run/systemd/system/service.d/*.conf
    exit 0
fi
exec env container=lab {tag_env}="$LAB_TAG" {systemd} --system --unit=lab.target
""".format(share=SHARE, devices=" ".join(DEVICES), writable=" ".join(WRITABLE),
           masked=" ".join(MASKED), tag_env=TAG_ENV, systemd=SYSTEMD)


def available() -> str | None:
    """Why a lab cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "a PID + mount namespace needs root"
    if not Path(SYSTEMD).exists():
        return f"{SYSTEMD} missing (Debian package systemd)"
    for tool in ("unshare", "nsenter", "findmnt", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} missing (util-linux)"
    return None


def _unshare(netns: str = "") -> list[str]:
    """The lab's command line. `setpriv --pdeathsig KILL` and `--kill-child` tie the lab to
    the test process: when it dies (even by kill -9) unshare gets SIGKILL, and so does
    the lab's PID 1 (and with it the namespace). `netns`: boot inside that network
    namespace (`ip netns exec` execs, so the chain stays parent -> child)."""
    lab = ["setpriv", "--pdeathsig", "KILL", "unshare", "--fork", "--kill-child", "--pid",
           "--mount", "--mount-proc", "/bin/sh", "-c", SETUP]
    return ["ip", "netns", "exec", netns, *lab] if netns else lab


def dry_run(share: Path | None = None) -> str:
    """The recipe up to, not including, starting systemd: what `findmnt` and the masks show."""
    env = {**os.environ, "LAB_DRY_RUN": "1", "LAB_TAG": "dry", "LAB_SHARE": str(share or "")}
    done = subprocess.run(_unshare(), env=env, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"lab dry run failed ({done.returncode}): {done.stderr}")
    return done.stdout


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_pids() -> dict[int, str]:
    """Host PIDs of labs' systemd (PID 1 of their namespace) -> their tag."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            exe = str(Path(f"/proc/{pid}/exe").readlink())
        except OSError:
            continue
        if not exe.endswith("/systemd"):
            continue
        tag = _environ(pid).get(TAG_ENV)
        if tag:
            found[pid] = tag
    return found


def sweep() -> list[int]:
    """SIGKILL the systemd of labs whose owner (the PID in the tag) is gone."""
    killed = []
    for pid, tag in lab_pids().items():
        owner = tag.split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


class SystemdLab:
    """One booted lab; `share` (a test's folder) is seen read-only at /run/lab-share.
    With `netns` (an `ip netns` name) the lab is a node of the namespace lab
    (tests/netns.py): its systemd, and every command `run()` starts, use that network."""

    def __init__(self, share: Path, netns: str = "") -> None:
        self.share = share
        self.netns = netns
        self.tag = f"{os.getpid()}-{next(_labs)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # host PID of the lab's systemd

    def start(self, timeout: float = 60) -> None:
        sweep()
        env = {**os.environ, "LAB_TAG": self.tag, "LAB_SHARE": str(self.share)}
        log = open(self.share / "lab-boot.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(_unshare(self.netns), env=env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [p for p, t in lab_pids().items() if t == self.tag]
            if mine:
                self.pid = mine[0]
                break
            if self.proc.poll() is not None:
                raise RuntimeError("lab exited: " + (self.share / "lab-boot.log").read_text())
            time.sleep(0.05)
        else:
            raise RuntimeError("lab systemd did not appear")
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-active", "lab.target", check=False).stdout.strip()
            if state == "active":
                return
            time.sleep(0.1)
        raise RuntimeError(f"lab.target not active: {self.run('systemctl', 'status', check=False)}")

    def run(self, *cmd: str, check: bool = True, timeout: float = 180,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command inside the lab (its mounts, its PID namespace)."""
        assert self.pid, "lab not started"
        enter = ["nsenter", "-t", str(self.pid), "-m", "-p", *(["-n"] if self.netns else [])]
        done = subprocess.run([*enter, *cmd],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                                   "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "HOME": "/root"})
        if check and done.returncode != 0:
            raise AssertionError(f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def sh(self, script: str, check: bool = True,
           timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def systemctl(self, *args: str, check: bool = True,
                  timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("/bin/sh", "-c", f'mkdir -p "$(dirname {path})" && cat > {path} && '
                 f"chmod {mode} {path}", input=text)

    def units(self) -> list[str]:
        """Every service and scope unit systemd has loaded that is not inactive."""
        out = self.systemctl("list-units", "--all", "--plain", "--no-legend",
                             "--type=service,scope,socket,timer,path,mount,automount,swap").stdout
        return [line.split()[0] for line in out.splitlines()
                if line.strip() and line.split()[2] != "inactive"]

    def journald(self) -> None:
        """Start systemd-journald (volatile: /run/log/journal; its /dev/log socket and
        audit feed stay masked)."""
        self.systemctl("start", "systemd-journald.service")

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", *args, check=False).stdout

    def close(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        self.pid = 0
