"""`ckecli etcd local-backup [-dir=DIR] [-max-backups=N]`: snapshot, verify, rotate.

Takes a snapshot from the first desired member that answers as a healthy
voter (talking with a root certificate signed in memory, valid minutes, like
`user-add`), writes it to `DIR/etcd-YYYYMMDD-hhmmss.backup` (UTC), fsyncs and
verifies it (etcd's SHA-256 trailer) before it counts, then keeps the newest N
backups in DIR. Prints `created backup NAME`, then one `removed NAME` per
backup rotated out.

DIR defaults to `[backup] dir` (else `STATE_DIR/backups`); N defaults to
`[backup] max_backups` (10). A DIR that does not exist is created (0700, with
any missing parents); an existing one must be writable and keeps its mode.

Exit status: 0 done; 1 no healthy member, or the snapshot failed (nothing is
kept); 2 bad usage (missing or unwritable DIR, N < 1, unknown flag): nothing
is read from etcd and nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ckeetcd.cli.certs import CommandFailed, fail, load_signing_ca
from ckeetcd.cli.common import load
from ckeetcd.cli.errors import UsageError
from ckeetcd.core.config import MAX_BACKUPS
from ckeetcd.core.textcheck import show

if TYPE_CHECKING:
    from ckeetcd.core.config import Config
    from ckeetcd.tasks.backup import BackupResult


def parse_max_backups(value: str | None) -> int | None:
    """-max-backups: an integer in 1..MAX_BACKUPS, as [backup] max_backups (None: the
    config's). Plain ASCII digits only: int() would also take "5_0", " 5" or full-width digits."""
    if value is None:
        return None
    digits = value[1:] if value[:1] in "+-" else value
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"-max-backups: {show(value)} is not an integer")
    if value.startswith("-") or len(digits) > 6 or not 1 <= int(value) <= MAX_BACKUPS:
        raise UsageError(f"-max-backups: must be between 1 and {MAX_BACKUPS} "
                         f"(got {show(value)})")
    return int(value)


def make_folder(folder: Path) -> str:
    """Create `folder` 0700 when missing (never chmod an existing one); why it cannot hold
    backups, or ""."""
    from ckeetcd.support.files import ensure_private_dir
    from ckeetcd.tasks.backup import check_folder

    if not folder.exists():
        try:
            ensure_private_dir(folder)
        except OSError as e:
            return f"{folder}: cannot create: {e.strerror or e}"
    return check_folder(folder)


def local_backup(args: argparse.Namespace) -> int:
    from ckeetcd.tasks.backup import default_dir

    keep = parse_max_backups(args.max_backups)
    if args.dir == "":
        raise UsageError("-dir: must not be empty")
    config = load(args)
    keep = keep or config.backup.max_backups
    if args.dir is not None:
        folder, where = Path(args.dir).absolute(), "-dir"
    else:
        folder, where = default_dir(config), f"[backup] dir in {config.path}"
    problem = make_folder(folder)
    if problem:
        raise UsageError(f"{where}: {problem}")
    try:
        result = _backup(config, folder, keep)
    except CommandFailed as e:
        return fail(e)
    print(f"created backup {result.path.name}")
    for p in result.removed:
        print(f"removed {p.name}")
    sys.stdout.flush()
    return 0


def _backup(config: Config, folder: Path, keep: int) -> BackupResult:
    """Connect to a healthy voter, snapshot into `folder`, rotate to `keep`."""
    from ckeetcd.cli.users import cli_root_tls, connect
    from ckeetcd.etcd.client import EtcdError
    from ckeetcd.tasks.backup import BackupError, take_backup

    tls = cli_root_tls(load_signing_ca(config))

    async def go() -> BackupResult:
        client = await connect(config, tls)
        try:
            return await take_backup(client, folder, keep)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except (EtcdError, BackupError) as e:
        raise CommandFailed(f"no backup made: {e}") from None
    except OSError as e:
        raise CommandFailed(f"no backup made: {e.filename or folder}: "
                            f"{e.strerror or e}") from None
