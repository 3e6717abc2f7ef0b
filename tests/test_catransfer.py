"""`ckeetcd ca export` / `ca import`: the CA moves between daemon hosts, 0600, checked."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from ckeetcd.loop.startup import can_lead, daemon_ca

from ckeetcd.cli.main import main
from ckeetcd.core.config import load_config
from ckeetcd.pki import ensure_ca
from tests.harness import ListLog


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
    assert can_lead(c2)

    public = tmp_path / "public.json"
    assert main(["ca", "export", "--no-key", "--out", str(public), "--config", str(first)]) == 0
    assert "ca_key" not in json.loads(public.read_text())
    assert main(["ca", "import", str(public), "--config", str(third)]) == 0
    c3 = load_config(third)
    assert not can_lead(c3)
    log = ListLog()
    ca = daemon_ca(c3, log)  # follows: has the CA cert and a client cert, no key
    assert ca is not None and log.names() == ["ca_key_absent"]
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
    log = ListLog()
    assert daemon_ca(c, log) is None
    assert log.names()[0] == "ca_missing"
    assert not (c.cluster.pki_dir / "ca.crt").exists()
    boot = load_config(node(tmp_path, "n1"))
    assert daemon_ca(boot, ListLog()) is not None and can_lead(boot)
