"""Entry points `ckeetcd` and `ckecli`: argument parsing only.

Heavy libraries (grpc, cryptography, kubernetes) are imported by each
command when it runs, so `--help` and bad usage answer at once.
Go-style single-dash flags (`-ttl=24h`) are accepted beside GNU style.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ckeetcd.cli.errors import USAGE_ERROR, UsageError

__all__ = ["USAGE_ERROR", "UsageError", "main"]

_GO_FLAG = re.compile(r"-([a-z][a-z0-9-]+)(=.*)?", re.DOTALL)  # fullmatch


def normalize_go_flags(argv: Sequence[str]) -> list[str]:
    """`-ttl=24h` -> `--ttl=24h`; single-letter flags and values are left alone."""
    out = []
    for arg in argv:
        m = _GO_FLAG.fullmatch(arg)
        out.append(f"-{arg}" if m and len(m.group(1)) > 1 else arg)
        if arg == "--":
            out.extend(argv[len(out):])
            break
    return out


class _Parser(argparse.ArgumentParser):
    """argparse, but its own errors echo arguments escaped and shortened
    (`unrecognized arguments: ...` would print a newline, an escape sequence or
    megabytes as given)."""

    def error(self, message: str) -> NoReturn:
        from ckeetcd.core.textcheck import printable

        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {printable(message)}\n")


def _count(text: str) -> int:
    """A positive count in plain ASCII digits (int() would also take " 5\\n" or "5_0")."""
    from ckeetcd.core.textcheck import show

    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 999999999 "
                                         f"(got {show(text)})")
    return int(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="config file (default: $CKEETCD_CONFIG, "
                                    "else /etc/ckeetcd/ckeetcd.toml)")
    p.add_argument("--log-format", choices=["json", "console"], default=None,
                   help="log format (default: console on a TTY, JSON otherwise)")


def _etcd_commands(sub: Any) -> None:
    p = sub.add_parser("root-issue", help="issue a root client certificate valid 2 hours")
    _common(p)
    p.add_argument("--output", choices=["json", "file"], default="json")
    p.set_defaults(func="ckeetcd.cli.certs:root_issue", no_grpc=True)

    p = sub.add_parser("issue", help="issue a client certificate for USER")
    _common(p)
    p.add_argument("--ttl", default="87600h", help="Go duration (default 87600h = 10 years)")
    p.add_argument("--output", choices=["json", "file"], default="json")
    p.add_argument("user", metavar="USER")
    p.set_defaults(func="ckeetcd.cli.certs:issue", no_grpc=True)

    p = sub.add_parser("user-add", help="add USER with readwrite on PREFIX only")
    _common(p)
    p.add_argument("user", metavar="USER")
    p.add_argument("prefix", metavar="PREFIX")
    p.add_argument("--replace", action="store_true",
                   help="replace the grant of an existing USER (prints old and new)")
    p.set_defaults(func="ckeetcd.cli.users:user_add")

    p = sub.add_parser("user-remove", help="remove USER and its role")
    _common(p)
    p.add_argument("user", metavar="USER")
    p.set_defaults(func="ckeetcd.cli.users:user_remove")

    p = sub.add_parser("local-backup", help="snapshot to DIR, verify, keep the newest N")
    _common(p)
    p.add_argument("--dir", default=None, metavar="DIR",
                   help="backup folder (default: [backup] dir, else STATE_DIR/backups)")
    p.add_argument("--max-backups", default=None, metavar="N",
                   help="keep at most N backups (default: [backup] max_backups, 10)")
    p.set_defaults(func="ckeetcd.cli.backup:local_backup")


def build_parser(prog: str = "ckeetcd") -> argparse.ArgumentParser:
    """The whole parser. (Building only the named command's subparser saved about
    10-20 ms per run, bench/cli_latency.py: not worth a proxy of argparse.)"""
    parser = _Parser(prog=prog, description="ckeetcd: a TLS + RBAC etcd "
                                     "cluster for Kubernetes control planes, kept healthy")
    _add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def _add_commands(sub: Any) -> None:

    p = sub.add_parser("run", help="bootstrap if needed, then reconcile until SIGTERM")
    _common(p)
    p.set_defaults(func="ckeetcd.cli.run:run")

    p = sub.add_parser("check-config", help="validate the config file")
    _common(p)
    p.set_defaults(func="ckeetcd.cli.check_config:check_config")

    p = sub.add_parser("plan", help="print the ops the daemon would run now; change nothing")
    _common(p)
    p.add_argument("--output", choices=["table", "json"], default="table")
    p.set_defaults(func="ckeetcd.cli.plan:plan")

    p = sub.add_parser("status", help="one row per desired or actual member")
    _common(p)
    p.add_argument("--output", choices=["table", "json"], default="table")
    p.set_defaults(func="ckeetcd.cli.status:status")

    p = sub.add_parser("history", help="the recorded ops and steps (newest last)")
    _common(p)
    p.add_argument("-n", type=_count, default=50, help="how many records (default 50)")
    p.add_argument("--output", choices=["table", "json"], default="table")
    p.set_defaults(func="ckeetcd.cli.history:history")

    p = sub.add_parser("pause", help="stop all automatic changes (the daemon keeps observing)")
    _common(p)
    p.add_argument("--reason", default="", help="why (shown in logs and `ckeetcd status`)")
    p.set_defaults(func="ckeetcd.cli.pause:pause")

    p = sub.add_parser("resume", help="undo `ckeetcd pause`")
    _common(p)
    p.set_defaults(func="ckeetcd.cli.pause:resume")

    p = sub.add_parser("restore", help="rebuild the cluster from a snapshot after quorum loss")
    _common(p)
    p.add_argument("--from", dest="snapshot", required=True, metavar="SNAPSHOT",
                   help="a snapshot file (local-backup, etcdctl snapshot save)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true",
                   help="restore even though the cluster has quorum")
    p.set_defaults(func="ckeetcd.cli.restore:restore")

    p = sub.add_parser("stop-members", help="stop the local runtime's etcd processes")
    _common(p)
    p.set_defaults(func="ckeetcd.cli.local:stop_members")

    ca = sub.add_parser("ca", help="move the cluster CA between daemon hosts")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    p = ca_sub.add_parser("export", help="write the CA (and its key) to FILE, mode 0600; "
                                         "creates the CA on the first node")
    _common(p)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--no-key", action="store_true",
                   help="CA certificate and a 90-day root client certificate instead of the "
                        "CA key: the importing daemon can follow but not lead")
    p.set_defaults(func="ckeetcd.cli.ca:ca_export")
    p = ca_sub.add_parser("import", help="install a CA bundle from `ca export` on this host")
    _common(p)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace a different CA")
    p.set_defaults(func="ckeetcd.cli.ca:ca_import")
    p = ca_sub.add_parser("rotate", help="replace a CA without downtime (the daemon does it, "
                                         "one member at a time)")
    _common(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--peer", action="store_true",
                       help="the peer CA (a one-CA cluster: migrate to a separate peer CA)")
    which.add_argument("--client", action="store_true", help="the client CA")
    p.set_defaults(func="ckeetcd.cli.ca:ca_rotate")

    etcd = sub.add_parser("etcd", help="CKE-compatible admin words (also: ckecli etcd ...)")
    _etcd_commands(etcd.add_subparsers(dest="etcd_command", required=True, metavar="COMMAND"))


def _resolve(spec: str) -> Callable[[argparse.Namespace], int]:
    import importlib

    module, _, name = spec.partition(":")
    fn: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return fn


def _leaf(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command that was parsed, e.g. the one of `etcd issue`."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                   None)
        if sub is None:
            return parser
        parser = sub.choices[getattr(args, sub.dest)]


def argument_name(action: argparse.Action, argv: Sequence[str]) -> str:
    """How the user wrote the argument: `-ttl` (Go style), `--ttl`, or USER for a positional."""
    if not action.option_strings:
        return str(action.metavar or action.dest.upper())
    longest = max(action.option_strings, key=len)
    go = longest[1:] if longest.startswith("--") else None
    if go and any(a == go or a.startswith(go + "=") for a in argv):
        return go
    return longest


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    argv: Sequence[str]) -> None:
    """Refuse, naming the argument, any value that is not UTF-8 (surrogate escapes from
    argv) or holds a control character: none is a name, path, duration or reason."""
    from ckeetcd.core.textcheck import refused_char

    for action in _leaf(parser, args)._actions:
        value = getattr(args, action.dest, None)
        if isinstance(value, str):
            why = refused_char(value)
            if why:
                raise UsageError(f"{argument_name(action, argv)}: {_show(value)} {why}")
    # A value argparse dropped (an option given twice keeps the last) is refused too.
    for i, token in enumerate(argv):
        if not refused_char(token):
            continue
        if token.startswith("-") and "=" in token:
            name, _, token = token.partition("=")
        elif i and argv[i - 1].startswith("-") and "=" not in argv[i - 1]:
            name = argv[i - 1]
        else:
            name = f"argument {i + 1}"
        if refused_char(name):  # the option's own name: `--re\nason=x`
            raise UsageError(f"{_show(name)} {refused_char(name)}")
        raise UsageError(f"{name}: {_show(token)} {refused_char(token)}")


def _show(value: str) -> str:
    from ckeetcd.core.textcheck import show

    return show(value)


def main(argv: Sequence[str] | None = None, prog: str = "ckeetcd",
         process: bool | None = None) -> int:
    """Parse and run one command. `process`: this is the process's entry point
    (default: when argv comes from sys.argv), so it may rewire fd 2."""
    process = argv is None if process is None else process
    raw = sys.argv[1:] if argv is None else list(argv)
    args_in = normalize_go_flags(raw)
    parser = build_parser(prog)
    args = parser.parse_args(args_in)
    try:
        check_arguments(parser, args, raw)
    except UsageError as e:
        parser.exit(USAGE_ERROR, f"{prog}: error: {e}\n")
    from ckeetcd.support import logs

    logs.configure(args.log_format)
    if process:
        os.environ.setdefault("GRPC_VERBOSITY", logs.GRPC_VERBOSITY_DEFAULT)
        # grpc's own lines become events too; a command that never loads grpc skips
        # it (its reader thread imports structlog: ~100 ms of CPU, bench/cli_latency.py)
        if logs.effective_format() == "json" and not getattr(args, "no_grpc", False):
            logs.capture_native_stderr()
    try:
        return _resolve(args.func)(args)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as e:  # a file the command needs (the state dir's, usually): say which
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def ckecli_main(argv: Sequence[str] | None = None) -> int:
    """`ckecli etcd X` is `ckeetcd etcd X`."""
    return main(sys.argv[1:] if argv is None else argv, prog="ckecli", process=argv is None)


def config_path(args: argparse.Namespace) -> str:
    from ckeetcd.core.config import default_config_path

    return str(default_config_path(args.config, os.environ))


if __name__ == "__main__":
    sys.exit(main())
