"""`ckeetcd ca export` / `ca import`: the CA moves between daemon hosts, 0600, checked."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from ckeetcd.cli.main import main
from ckeetcd.core.config import load_config
from ckeetcd.loop.startup import can_lead, daemon_ca
from ckeetcd.pki import ensure_ca
from tests.harness import names


def node(tmp_path: Path, name: str, cluster: str = "multi") -> Path:
    d = tmp_path / name
    d.mkdir()
    cfg = d / "ckeetcd.toml"
    cfg.write_text(f'[cluster]\nname = "{cluster}"\nstate_dir = "state"\n\n[daemon]\n'
                   f'id = "{name}"\nelection = true\n\n'
                   '[[members]]\nname = "n1"\naddress = "10.0.0.1"\n')
    return cfg




def test_export_import_with_and_without_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            ) -> None:
    first, second, third = (node(tmp_path, n) for n in ("n1", "n2", "n3"))
    bundle = tmp_path / "ca.json"
    assert main(["ca", "export", "--out", str(bundle), "--config", str(first)]) == 0
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert "ca_key" in json.loads(bundle.read_text())
    assert main(["ca", "import", str(bundle), "--config", str(second)]) == 0
    c1, c2 = load_config(first), load_config(second)
    ca_crt = "ca.crt"
    assert (c2.cluster.pki_dir / ca_crt).read_bytes() == (c1.cluster.pki_dir / ca_crt).read_bytes()
    assert stat.S_IMODE((c2.cluster.pki_dir / "ca.key").stat().st_mode) == 0o600
    for f in ("peer-ca.crt", "peer-ca.key"):  # the peer CA travels with the client CA
        assert (c2.cluster.pki_dir / f).read_bytes() == (c1.cluster.pki_dir / f).read_bytes()
    assert stat.S_IMODE((c2.cluster.pki_dir / "peer-ca.key").stat().st_mode) == 0o600
    assert can_lead(c2)

    public = tmp_path / "public.json"
    assert main(["ca", "export", "--no-key", "--out", str(public), "--config", str(first)]) == 0
    assert not {"ca_key", "peer_ca_key"} & set(json.loads(public.read_text()))
    assert main(["ca", "import", str(public), "--config", str(third)]) == 0
    c3 = load_config(third)
    assert not can_lead(c3)
    with capture_logs() as logs:
        trust = daemon_ca(c3, structlog.get_logger())  # follows: CA certs, client cert, no key
    assert trust is not None and names(logs) == ["ca_key_absent"] and trust.separate
    assert not (c3.cluster.pki_dir / "peer-ca.key").exists()
    for ca in (trust.client, trust.peer):
        with pytest.raises(Exception, match="no CA key"):
            ca.issue("x", __import__("datetime").timedelta(hours=1))


def test_import_refuses_other_cluster_and_other_ca(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, b, other = node(tmp_path, "n1"), node(tmp_path, "n2"), node(tmp_path, "o1", "other")
    bundle_a, bundle_b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["ca", "export", "--out", str(bundle_a), "--config", str(a)]) == 0
    assert main(["ca", "import", str(bundle_a), "--config", str(other)]) == 2  # usage
    assert "for cluster 'multi'" in capsys.readouterr().err
    # n2 is not the bootstrapper: `ca export` makes no CA there; give it a 2nd CA by hand
    assert main(["ca", "export", "--out", str(bundle_b), "--config", str(b)]) == 1
    assert "not the bootstrapper" in capsys.readouterr().err
    ensure_ca(load_config(b).cluster.pki_dir, "multi")
    assert main(["ca", "import", str(bundle_a), "--config", str(b)]) == 2  # needs --force
    assert "different CA" in capsys.readouterr().err
    assert main(["ca", "import", str(bundle_a), "--config", str(b), "--force"]) == 0


def test_daemon_without_ca_is_refused_unless_bootstrapper(tmp_path: Path) -> None:
    c = load_config(node(tmp_path, "n2"))  # not the bootstrapper (n1 is the first member)
    with capture_logs() as logs:
        assert daemon_ca(c, structlog.get_logger()) is None
    assert names(logs)[0] == "ca_missing"
    assert not (c.cluster.pki_dir / "ca.crt").exists()
    boot = load_config(node(tmp_path, "n1"))
    assert daemon_ca(boot, structlog.get_logger()) is not None and can_lead(boot)


def test_a_rotations_new_ca_travels_with_the_keys_never_without(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While a rotation runs, `ca export` carries its new CA (with the key) where the
    host has it; `ca import` puts it into next-<role>/, so that daemon can lead the
    rotation on. A `--no-key` export never carries it; a bundle whose new CA key does
    not match is refused (exit 2, nothing written)."""
    from ckeetcd.core.carotation import PEER
    from ckeetcd.pki.rotationfiles import load_next, make_next, next_dir, start_rotation

    first, second, third = (node(tmp_path, n) for n in ("n1", "n2", "n3"))
    bundle = tmp_path / "ca.json"
    assert main(["ca", "export", "--out", str(bundle), "--config", str(first)]) == 0
    assert "next_peer_ca_key" not in json.loads(bundle.read_text())  # no rotation yet
    assert main(["ca", "import", str(bundle), "--config", str(second)]) == 0
    pki1, pki2 = (load_config(c).cluster.pki_dir for c in (first, second))
    r = start_rotation(pki1, PEER, (pki1 / "peer-ca.crt").read_bytes(), migration=False)
    new, r = make_next(pki1, "multi", r)
    start_rotation(pki2, PEER, (pki2 / "peer-ca.crt").read_bytes(), migration=False)
    assert main(["ca", "export", "--out", str(bundle), "--config", str(first)]) == 0
    assert "the new peer CA of the rotation under way" in capsys.readouterr().out
    data = json.loads(bundle.read_text())
    assert data["next_peer_ca_certificate"] == new.cert_pem.decode()
    public = tmp_path / "public.json"
    assert main(["ca", "export", "--no-key", "--out", str(public), "--config", str(first)]) == 0
    assert not [k for k in json.loads(public.read_text()) if k.startswith("next_")]

    bad = dict(data, next_peer_ca_key=data["peer_ca_key"])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["ca", "import", str(tmp_path / "bad.json"), "--config", str(second)]) == 2
    assert "next_peer_ca_key does not belong" in capsys.readouterr().err
    assert not next_dir(pki2, PEER).exists()

    assert main(["ca", "import", str(bundle), "--config", str(second)]) == 0
    assert "the new peer CA of the rotation under way" in capsys.readouterr().out
    got = load_next(pki2, r)
    assert got is not None and got.cert_pem == new.cert_pem
    assert stat.S_IMODE((next_dir(pki2, PEER) / "peer-ca.key").stat().st_mode) == 0o600
    assert main(["ca", "import", str(bundle), "--config", str(second)]) == 0  # idempotent
    assert main(["ca", "import", str(bundle), "--config", str(third)]) == 0  # not rotating yet
