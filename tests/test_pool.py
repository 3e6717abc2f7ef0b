"""ClientPool.rotate: new channels for a renewed certificate, old ones closed later."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from ckeetcd.etcd import pool as pool_module
from ckeetcd.etcd.pool import ClientPool
from ckeetcd.pki import TLSFiles, ensure_ca, write_cert_key


def tls_files(tmp_path: Path) -> TLSFiles:
    ca = ensure_ca(tmp_path / "pki", "c")
    files = TLSFiles(ca=ca.cert_path, cert=tmp_path / "root.crt", key=tmp_path / "root.key")
    write_cert_key(files.cert, files.key, ca.issue("root", dt.timedelta(hours=1)))
    return files


def test_rotate_makes_new_channels_and_closes_the_old_ones_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        now = [1000.0]
        monkeypatch.setattr(pool_module.time, "monotonic", lambda: now[0])
        pool = ClientPool(tls_files(tmp_path), timeout=1.0)
        old = pool.get("https://127.0.0.1:1")
        assert pool.get("https://127.0.0.1:1") is old  # cached
        pool.rotate()
        new = pool.get("https://127.0.0.1:1")
        assert new is not old
        closed: list[object] = []

        async def record_close() -> None:
            closed.append(old)

        monkeypatch.setattr(old, "close", record_close)
        now[0] += pool_module.RETIRE_AFTER - 1
        pool.get("https://127.0.0.1:1")
        await asyncio.sleep(0)
        assert closed == []  # calls may still run on it
        now[0] += 2
        pool.get("https://127.0.0.1:1")
        for _ in range(3):
            await asyncio.sleep(0)
        assert closed == [old]
        await pool.close()

    asyncio.run(go())
