"""CLI latency of `ckecli etcd issue` and `ckecli etcd user-add`, against baselines run alongside.

    .venv/bin/python bench/cli_latency.py [--runs 15] [--output bench/results/cli_latency.json]

Measured in one run, on one machine, median wall time of N runs after one
warm-up run each (fresh processes every time, as an operator's shell would):

- `ckecli etcd issue -ttl=24h -output=json USER` (signs locally, no cluster), against
  * the same job done by `openssl`: an EC P-256 key, a CSR, signing it with the
    same CA (three processes, as a shell script would run them), and
  * `etcdctl version` (the target: at most 2.5x, issue 13; the certificate is
    made by `pki.CA.issue` on cryptography.x509, the daemon's own issuer);
- the same `issue` command without `logs.configure()` (the structlog + rich
  import that `ckeetcd.cli.main` does for every command), to show what it costs;
- a breakdown: the stages of `issue` (python start, parsing argv, loading the
  config, importing pki with cryptography, loading the CA, signing) each run
  cumulatively in a fresh `python -c`, python without its site packages (-S), and
  `import cryptography.x509` alone: what the 2.5x target leaves;
- the argparse parser of cli/main.py built and an `issue` command line parsed,
  in-process (median of 200): what a proxy that built only the named command
  could save at most (issue 13 dropped that proxy: it saved 10-20 ms);
- `ckecli etcd user-add USER PREFIX` for a new user on a real 3-member TLS
  cluster, against the etcdctl sequence that does the same (`user add
  --no-password`, `role add`, `role grant-permission --prefix`, `user
  grant-role`), plus the no-change re-run.

Traffic stays on a private 127.x block; the cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import ETCDCTL  # noqa: E402

from ckeetcd.pki import ensure_ca  # noqa: E402
from tests.harness import Cluster  # noqa: E402

BIN = Path(sys.executable).parent
CKECLI = str(BIN / "ckecli")
OPENSSL = "openssl"
EXTENSIONS = (
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature, keyEncipherment\n"
    "extendedKeyUsage = clientAuth\n"
    "authorityKeyIdentifier = keyid\n"
)
# `ckecli` minus `logs.configure()`: the same parser and the same command function.
NO_LOGS = (
    "import sys\n"
    "from ckeetcd.cli.main import build_parser, normalize_go_flags\n"
    "args = build_parser('ckecli').parse_args(normalize_go_flags(sys.argv[1:]))\n"
    "from ckeetcd.cli.certs import issue\n"
    "sys.exit(issue(args))\n"
)
TARGET_ISSUE_VS_ETCDCTL_VERSION = 2.5
# Where the time of `issue` goes: each stage runs the ones before it too, in a fresh
# `python -c` (the differences of medians are the stages' own cost).
STAGES = {
    "1_python_startup": "",
    "2_parse_argv": (
        "import sys\n"
        "from ckeetcd.cli.main import build_parser, normalize_go_flags\n"
        "args = build_parser('ckecli').parse_args(normalize_go_flags(sys.argv[1:]))\n"),
    "3_load_config": "from ckeetcd.cli.common import load\nconfig = load(args)\n",
    "4_import_pki_cryptography": "import ckeetcd.pki\n",
    "5_load_ca": "from ckeetcd.cli.certs import load_signing_ca, sign\n"
                 "ca = load_signing_ca(config)\n",
    "6_sign": "import datetime as dt\npair = sign(ca, 'app', dt.timedelta(hours=24))\n",
}


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
    r = subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.decode()}")


def timed(jobs: dict[str, Callable[[int], None]], runs: int) -> dict[str, dict[str, float | int]]:
    """Median, min, max wall seconds of each `job(i)` over `runs` runs after one warm-up.

    The jobs take turns (run i of every job, in an order that rotates, before run
    i + 1), so load from other processes on a shared machine falls on all of them
    alike and the ratios stay meaningful even when the absolute figures do not.
    """
    names = list(jobs)
    for name in names:
        jobs[name](-1)
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu_samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t = time.perf_counter()
            cpu = _children_cpu()
            jobs[name](i)
            samples[name].append(time.perf_counter() - t)
            cpu_samples[name].append(_children_cpu() - cpu)
    return {name: {"median_s": round(statistics.median(s), 4), "min_s": round(min(s), 4),
                   "max_s": round(max(s), 4),
                   "cpu_median_s": round(statistics.median(cpu_samples[name]), 4),
                   "runs": runs} for name, s in samples.items()}


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far: unlike wall time,
    hardly moved by other load on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ratio(a: dict[str, float | int], b: dict[str, float | int], key: str = "median_s") -> float:
    return round(float(a[key]) / float(b[key]), 2)


def bench_issue(work: Path, runs: int) -> dict[str, object]:
    state = work / "state"
    ensure_ca(state / "pki", "bench")
    config = work / "ckeetcd.toml"
    config.write_text(f'[cluster]\nname = "bench"\nstate_dir = "{state}"\n\n'
                      '[[members]]\nname = "m1"\naddress = "127.0.0.1"\n')
    env = {**os.environ, "CKEETCD_CONFIG": str(config)}
    ca_crt, ca_key = state / "pki" / "ca.crt", state / "pki" / "ca.key"
    ext = work / "client.ext"
    ext.write_text(EXTENSIONS)
    out = work / "openssl"
    out.mkdir()

    def ckecli_issue(i: int) -> None:
        run([CKECLI, "etcd", "issue", "-ttl=24h", "-output=json", f"app{i}"], env)

    def ckecli_issue_no_logs(i: int) -> None:
        run([sys.executable, "-c", NO_LOGS, "etcd", "issue", "-ttl=24h", "-output=json",
             f"app{i}"], env)

    def openssl_issue(i: int) -> None:
        key, csr, crt = out / f"{i}.key", out / f"{i}.csr", out / f"{i}.crt"
        run([OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(key)], env)
        run([OPENSSL, "req", "-new", "-key", str(key), "-subj", f"/CN=app{i}", "-out", str(csr)],
            env)
        run([OPENSSL, "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
             "-set_serial", str(1000 + i + 1), "-days", "1", "-sha256", "-extfile", str(ext),
             "-out", str(crt)], env)

    def etcdctl_version(i: int) -> None:
        run([ETCDCTL, "version"], env)

    def stage(upto: str) -> Callable[[int], None]:
        code = "".join(c for name, c in STAGES.items() if name <= upto) or "pass"
        return lambda i: run([sys.executable, "-c", code, "etcd", "issue", "-ttl=24h",
                              "-output=json", f"app{i}"], env)

    stages = {name: stage(name) for name in STAGES}
    got = timed({"issue": ckecli_issue, "no_logs": ckecli_issue_no_logs,
                 "openssl": openssl_issue,
                 "version": etcdctl_version,
                 "python": lambda i: run([sys.executable, "-c", "pass"], env),
                 "python_no_site": lambda i: run([sys.executable, "-S", "-c", "pass"], env),
                 "import_x509": lambda i: run([sys.executable, "-c", "import cryptography.x509"],
                                              env),
                 **stages}, runs)
    issue, no_logs = got["issue"], got["no_logs"]
    openssl, version, python = got["openssl"], got["version"], got["python"]
    # the baseline does the same job: its certificate verifies against the CA
    run([OPENSSL, "verify", "-CAfile", str(ca_crt), "-purpose", "sslclient",
         str(out / "0.crt")], env)
    return {
        "ckecli_issue": issue,
        "ckecli_issue_without_logs_configure": no_logs,
        "parser_in_process_ms": parser_in_process(),
        "openssl_key_csr_sign": openssl,
        "etcdctl_version": version,
        "python_startup": python,
        "ratio_issue_vs_openssl": ratio(issue, openssl),
        "ratio_issue_vs_etcdctl_version": ratio(issue, version),
        "ratio_issue_vs_etcdctl_version_of_min": ratio(issue, version, "min_s"),
        "ratio_issue_vs_etcdctl_version_of_cpu": ratio(issue, version, "cpu_median_s"),
        "target_issue_vs_etcdctl_version": TARGET_ISSUE_VS_ETCDCTL_VERSION,
        "target_met": ratio(issue, version) <= TARGET_ISSUE_VS_ETCDCTL_VERSION,
        "ratio_issue_without_logs_vs_etcdctl_version": ratio(no_logs, version),
        "ratio_issue_without_logs_vs_openssl": ratio(no_logs, openssl),
        "breakdown": breakdown(got, version),
    }


def breakdown(got: dict[str, dict[str, float | int]],
              version: dict[str, float | int]) -> dict[str, object]:
    """Each stage's own CPU ms (median of the stage minus median of the one before), and
    what the target leaves: python with its site packages and cryptography's import
    alone, against 2.5x `etcdctl version`."""
    own: dict[str, float] = {}
    before = 0.0
    for name in STAGES:
        cpu = float(got[name]["cpu_median_s"])
        own[name] = round((cpu - before) * 1000, 1)
        before = cpu
    return {
        "stage_cpu_ms": own,
        "stages_cpu_ms_total": round(before * 1000, 1),
        "python_site_cpu_ms": round((float(got["python"]["cpu_median_s"]) -
                                     float(got["python_no_site"]["cpu_median_s"])) * 1000, 1),
        "python_plus_import_x509_cpu_ms": round(float(got["import_x509"]["cpu_median_s"]) * 1000,
                                                1),
        "target_cpu_ms": round(float(version["cpu_median_s"]) * 1000 *
                               TARGET_ISSUE_VS_ETCDCTL_VERSION, 1),
        "stages": {name: got[name] for name in STAGES},
    }


def parser_in_process(n: int = 200) -> dict[str, float]:
    """Median ms to build the whole parser and parse an `issue` command line."""
    from ckeetcd.cli import main as m

    argv = m.normalize_go_flags(["etcd", "issue", "-ttl=24h", "-output=json", "app"])

    def median_ms(build: Callable[[], object]) -> float:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            build()
            samples.append(time.perf_counter() - t)
        return round(statistics.median(samples) * 1000, 2)

    return {"whole_tree_ms": median_ms(lambda: m.build_parser("ckecli").parse_args(argv))}


def bench_user_add(work: Path, runs: int) -> dict[str, object]:
    cluster = Cluster(work, ["m1", "m2", "m3"])
    try:
        cluster.start_daemon()
        cluster.wait_healthy(["m1", "m2", "m3"])
        env = {**os.environ, "CKEETCD_CONFIG": str(cluster.config_path)}
        tls = cluster.root_tls()
        etcdctl = [ETCDCTL, f"--endpoints={cluster.endpoints(['m1', 'm2', 'm3'])}",
                   f"--cacert={tls.ca}", f"--cert={tls.cert}", f"--key={tls.key}"]

        def ckecli_user_add(i: int) -> None:
            run([CKECLI, "etcd", "user-add", f"cli{i + 1}", f"/cli{i + 1}/"], env)

        def ckecli_user_add_again(i: int) -> None:
            run([CKECLI, "etcd", "user-add", "cli0", "/cli0/"], env)

        def etcdctl_sequence(i: int) -> None:
            name = f"ctl{i + 1}"
            run([*etcdctl, "user", "add", name, "--no-password"], env)
            run([*etcdctl, "role", "add", name], env)
            run([*etcdctl, "role", "grant-permission", name, "--prefix=true", "readwrite",
                 f"/{name}/"], env)
            run([*etcdctl, "user", "grant-role", name, name], env)

        got = timed({"add": ckecli_user_add, "again": ckecli_user_add_again,
                     "seq": etcdctl_sequence}, runs)
        add, again, seq = got["add"], got["again"], got["seq"]
        # both ended in the same place
        cli_role = subprocess.run([*etcdctl, "role", "get", "cli1"], capture_output=True,
                                  text=True, env=env).stdout
        ctl_role = subprocess.run([*etcdctl, "role", "get", "ctl1"], capture_output=True,
                                  text=True, env=env).stdout
        assert "[/cli1/, /cli10)" in cli_role and "[/ctl1/, /ctl10)" in ctl_role, (cli_role,
                                                                                  ctl_role)
        return {
            "ckecli_user_add_new_user": add,
            "ckecli_user_add_no_change": again,
            "etcdctl_4_command_sequence": seq,
            "ratio_user_add_vs_etcdctl_sequence": ratio(add, seq),
            "ratio_user_add_no_change_vs_etcdctl_sequence": ratio(again, seq),
        }
    finally:
        cluster.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "cli_latency.json")
    p.add_argument("--no-cluster", action="store_true", help="skip the user-add part")
    args = p.parse_args()
    # An installed package has its bytecode cached; this session's environment may
    # set PYTHONDONTWRITEBYTECODE, so compile once instead of on every measured run.
    compileall.compile_dir(str(ROOT / "ckeetcd"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="ckeetcd-bench-") as tmp:
        work = Path(tmp)
        (work / "issue").mkdir()
        result: dict[str, object] = {
            "bench": "cli_latency",
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "platform": platform.platform()},
            "statistic": "median wall seconds of fresh processes, one warm-up run dropped",
            "issue": bench_issue(work / "issue", args.runs),
        }
        if not args.no_cluster:
            (work / "cluster").mkdir()
            result["user_add"] = bench_user_add(work / "cluster", args.runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
