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


def test_client_rotation_files_the_bundle_and_which_ca_crt_a_member_needs(pki: Path) -> None:
    """The client bundle is what servers are verified with while it is here (ca.crt
    again after the finish), and the ca.crt a member needs follows its server.crt."""
    import datetime as dt

    from ckeetcd.core.carotation import CLIENT
    from ckeetcd.pki.rotationfiles import (
        ca_pem_for,
        client_bundle_path,
        server_trust_file,
        write_client_bundle,
    )

    old = load_ca(pki)
    r = start_rotation(pki, CLIENT, old.cert_pem, migration=False)
    new, r = make_next(pki, "test", r)
    assert server_trust_file(pki) == pki / "ca.crt"
    assert write_client_bundle(pki, r) and not write_client_bundle(pki, r)  # once
    assert client_bundle_path(pki).read_bytes() == old.cert_pem + new.cert_pem
    assert server_trust_file(pki) == client_bundle_path(pki)
    day = dt.timedelta(days=1)
    old_server, new_server = (ca.issue("m1", day, server=True).cert_pem for ca in (old, new))
    assert ca_pem_for(old_server, r, b"current") == old.cert_pem
    assert ca_pem_for(new_server, r, b"current") == new.cert_pem
    assert ca_pem_for(b"garbage", r, b"current") == b"current"
    assert ca_pem_for(new_server, None, b"current") == b"current"
    done = finish(pki, r)
    assert ca_pem_for(old_server, done, b"current") == b"current"
    assert not client_bundle_path(pki).exists() and server_trust_file(pki) == pki / "ca.crt"
    assert (pki / "ca.crt").read_bytes() == new.cert_pem


def test_a_daemon_cert_from_the_next_client_ca_is_usable(pki: Path, tmp_path: Path) -> None:
    """A daemon killed after the rotation re-issued its certificate keeps it at start."""
    import datetime as dt

    from cryptography import x509

    from ckeetcd.loop.daemonca import client_cert_problem
    from ckeetcd.pki import TLSFiles, write_cert_key

    old = load_ca(pki)
    new = create_ca(tmp_path / "other", "test")
    tls = TLSFiles(ca=pki / "ca.crt", cert=tmp_path / "d.crt", key=tmp_path / "d.key")
    write_cert_key(tls.cert, tls.key, new.issue("root", dt.timedelta(days=1)))
    assert client_cert_problem(tls, old.cert) == "not signed by the CA in ca.crt"
    assert client_cert_problem(tls, old.cert, new.cert) == ""
    stranger = x509.load_pem_x509_certificate(create_ca(tmp_path / "x", "test").cert_pem)
    assert client_cert_problem(tls, old.cert, stranger) == "not signed by the CA in ca.crt"


def test_the_daemon_signs_with_the_client_ca_a_finish_put_in_place(
        pki: Path, logs: list[dict[str, object]]) -> None:
    """After a client rotation's finish, the running daemon's trust and the side tasks
    that sign (renewals, followers' requests) hold the new CA; unchanged files: no-op."""
    import structlog

    from ckeetcd.core.carotation import CLIENT
    from ckeetcd.core.config import load_config
    from ckeetcd.loop.startup import reload_client_ca
    from ckeetcd.pki import Trust
    from tests.harness import named

    path = pki.parent / "ckeetcd.toml"  # a config that names the pki dir (its parent)
    path.write_text(f'[cluster]\nname = "test"\nstate_dir = "{pki.parent}"\n'
                    '[[members]]\nname = "m1"\naddress = "127.0.0.1"\n')
    config = load_config(path)
    trust = Trust(load_ca(pki), load_ca(pki, PEER))

    class Signer:  # the attribute the daemon's signing side tasks keep their CA in
        def __init__(self, ca: object) -> None:
            self.ca = ca

    side = [Signer(trust.client), Signer(trust.peer)]
    log = structlog.get_logger()
    assert reload_client_ca(config, trust, side, log) is trust
    r = start_rotation(pki, CLIENT, trust.client.cert_pem, migration=False)
    new, r = make_next(pki, "test", r)
    finish(pki, r)
    reloaded = reload_client_ca(config, trust, side, log)
    assert reloaded.client.cert_pem == new.cert_pem and reloaded.peer is trust.peer
    assert side[0].ca is reloaded.client and side[1].ca is trust.peer
    assert [e["role"] for e in named(logs, "ca_reloaded")] == ["client"]


def _copy_public(src: Path, dst: Path, role: str = PEER) -> None:
    """A daemon host without the CA keys of `role` (a `--no-key` follower)."""
    dst.mkdir(parents=True, exist_ok=True)
    name = "peer-ca.crt" if role == PEER else "ca.crt"
    (dst / name).write_bytes((src / name).read_bytes())


def test_a_finished_rotation_reaches_every_other_daemon_host(pki: Path, tmp_path: Path) -> None:
    """The host that finished, one the new CA (with key) was copied to, one without any
    key of the role, and a key holder the new CA was never copied to: each ends on the
    new CA, except the last, which keeps its files and says so."""
    import shutil

    from ckeetcd.pki.rotationfiles import follow_finish, install_next, load_next

    copied, keyless, stale = tmp_path / "b", tmp_path / "c", tmp_path / "d"
    shutil.copytree(pki, copied)
    shutil.copytree(pki, stale)
    _copy_public(pki, keyless)
    r = start_rotation(pki, PEER, (pki / "peer-ca.crt").read_bytes(), migration=False)
    new, r = make_next(pki, "test", r)
    assert install_next(copied, PEER, new.cert_pem, (next_dir(pki, PEER) / "peer-ca.key")
                        .read_bytes())
    done = finish(pki, r)
    assert follow_finish(pki, done) == ""  # the finish ran here
    assert follow_finish(copied, done) == "key"
    assert load_ca(copied, PEER).cert_pem == new.cert_pem and not next_dir(copied, PEER).exists()
    assert follow_finish(keyless, done) == "certificate"
    assert (keyless / "peer-ca.crt").read_bytes() == new.cert_pem
    assert not (keyless / "peer-ca.key").exists()
    before = (stale / "peer-ca.crt").read_bytes()
    assert follow_finish(stale, done) == "key-missing"
    assert (stale / "peer-ca.crt").read_bytes() == before  # a matching pair still
    assert load_next(stale, done) is None
    for d in (copied, keyless):
        assert follow_finish(d, done) == ""  # idempotent


def test_a_copied_new_ca_is_installed_once_and_never_replaced_unasked(pki: Path) -> None:
    from ckeetcd.pki.rotationfiles import install_next

    a, b = create_ca(pki / "x", "test", role=PEER), create_ca(pki / "y", "test", role=PEER)
    key = (pki / "x" / "peer-ca.key").read_bytes()
    assert install_next(pki, PEER, a.cert_pem, key) is True
    assert stat.S_IMODE((next_dir(pki, PEER) / "peer-ca.key").stat().st_mode) == 0o600
    assert install_next(pki, PEER, a.cert_pem, key) is False
    other = (pki / "y" / "peer-ca.key").read_bytes()
    with pytest.raises(RotationError, match=r"next-peer holds another new peer CA.*--force"):
        install_next(pki, PEER, b.cert_pem, other)
    assert install_next(pki, PEER, b.cert_pem, other, force=True) is True


def test_a_stale_new_ca_is_never_taken_for_the_one_the_record_names(pki: Path) -> None:
    """Two leaders each made a new CA; etcd's record names the other one: this host's
    is refused (the plan holds), never written into the record."""
    from dataclasses import replace

    r = start_rotation(pki, PEER, (pki / "peer-ca.crt").read_bytes(), migration=False)
    make_next(pki, "test", r)
    named = replace(r, record=replace(r.record, new="0123456789abcdef"))
    with pytest.raises(RotationError, match="not the new peer CA the rotation record names"):
        make_next(pki, "test", named)
