"""The rotation's files (pki dir, no etcd): the record round trip and refusal of a bad
one, the new CA made once (a kill between its two writes, or before the record named
it, makes no second CA), and the finish completed after a kill between its renames."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ckeetcd.core.carotation import PEER
from ckeetcd.pki import CAError, create_ca, load_ca
from ckeetcd.pki.rotationfiles import (
    RotationError,
    cert_fingerprint,
    finish,
    make_next,
    next_dir,
    read_rotation,
    record_path,
    settle,
    start_rotation,
)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    create_ca(d, "test")
    create_ca(d, "test", role=PEER)
    return d


def test_the_record_round_trips_and_a_bad_one_is_named(pki: Path) -> None:
    old = (pki / "peer-ca.crt").read_bytes()
    r = start_rotation(pki, PEER, old, migration=False, now=5.0)
    assert read_rotation(pki, PEER) == r and r.record.old == cert_fingerprint(old)
    assert stat.S_IMODE(record_path(pki, PEER).stat().st_mode) == 0o600
    record_path(pki, PEER).write_text("{not json")
    with pytest.raises(RotationError, match=r"rotation-peer\.json: not a rotation record"):
        read_rotation(pki, PEER)
    with pytest.raises(CAError):  # the daemon refuses to start on it, naming the file
        settle(pki)


def test_the_new_ca_is_made_once(pki: Path) -> None:
    r = start_rotation(pki, PEER, (pki / "peer-ca.crt").read_bytes(), migration=False)
    ca, r2 = make_next(pki, "test", r)
    assert r2.record.new == cert_fingerprint(ca.cert_pem) != r.record.old
    # killed before the record named it: the same CA, loaded
    again, r3 = make_next(pki, "test", r)
    assert again.cert_pem == ca.cert_pem and r3.record.new == r2.record.new
    # killed between create_ca's two writes (key written, certificate not): finished
    d = next_dir(pki, PEER)
    (d / "peer-ca.crt").unlink()
    third, _ = make_next(pki, "test", r)
    assert third.key.public_key() == ca.key.public_key()


@pytest.mark.parametrize("kill_after", ["key", "both", "record"])
def test_a_finish_cut_short_is_completed_at_start(pki: Path, kill_after: str) -> None:
    r = start_rotation(pki, PEER, (pki / "peer-ca.crt").read_bytes(), migration=False)
    new, r = make_next(pki, "test", r)
    d = next_dir(pki, PEER)
    os.replace(d / "peer-ca.key", pki / "peer-ca.key")  # finish's first rename
    if kill_after in ("both", "record"):
        os.replace(d / "peer-ca.crt", pki / "peer-ca.crt")
    if kill_after == "record":
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    assert settle(pki) == [PEER]
    loaded = load_ca(pki, PEER)  # a matching pair: the daemon starts
    assert loaded.cert_pem == new.cert_pem
    after = read_rotation(pki, PEER)
    assert after is not None and after.record.done and not d.exists()
    assert settle(pki) == []  # nothing left to do


def test_finish_is_idempotent_and_the_old_key_is_gone(pki: Path) -> None:
    old_key = (pki / "peer-ca.key").read_bytes()
    r = start_rotation(pki, PEER, (pki / "peer-ca.crt").read_bytes(), migration=False)
    _, r = make_next(pki, "test", r)
    finish(pki, r)
    done = finish(pki, r)
    assert done.record.done
    assert (pki / "peer-ca.key").read_bytes() != old_key
    assert stat.S_IMODE((pki / "peer-ca.key").stat().st_mode) == 0o600


def test_a_migration_finish_leaves_the_client_ca_alone(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    client = create_ca(pki, "test")
    r = start_rotation(pki, PEER, client.cert_pem, migration=True)
    _, r = make_next(pki, "test", r)
    finish(pki, r)
    assert load_ca(pki).cert_pem == client.cert_pem
    assert cert_fingerprint((pki / "peer-ca.crt").read_bytes()) == r.record.new
