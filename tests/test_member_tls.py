"""member_tls_problem on hand-made TLS sets (pure): what a killed install can leave."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ckeetcd.pki import CA, ensure_ca, member_tls_files, member_tls_problem

NOW = dt.datetime.now(dt.timezone.utc)
ADDRESS = "127.0.0.9"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    pki: Path = tmp_path_factory.mktemp("pki")
    return ensure_ca(pki, "test")


def problem(ca: CA, files: dict[str, bytes | None]) -> str:
    return member_tls_problem(files, ca.cert_pem, ADDRESS, ("localhost",),
                              dt.timedelta(hours=1), NOW)


def test_a_complete_fresh_set_is_fine(ca: CA) -> None:
    assert problem(ca, dict(member_tls_files(ca, "m1", ADDRESS))) == ""


def test_certificates_only_are_checked_as_before(ca: CA) -> None:
    files = member_tls_files(ca, "m1", ADDRESS)
    assert problem(ca, {k: v for k, v in files.items() if k.endswith(".crt")}) == ""


@pytest.mark.parametrize(("damage", "want"), [
    ("no peer.key", "missing"),
    ("no server.key", "missing"),
    ("peer.key of the server pair", "peer.key does not match its certificate"),
    ("server.key of an older set", "server.key does not match its certificate"),
    ("peer.key garbage", "peer.key does not match its certificate"),
    ("no peer.crt", "missing"),
])
def test_a_partial_or_mixed_set_is_a_problem(ca: CA, damage: str, want: str) -> None:
    files: dict[str, bytes | None] = dict(member_tls_files(ca, "m1", ADDRESS))
    older = member_tls_files(ca, "m1", ADDRESS)
    if damage == "no peer.key":
        files["peer.key"] = None
    elif damage == "no server.key":
        files["server.key"] = None
    elif damage == "peer.key of the server pair":
        files["peer.key"] = files["server.key"]
    elif damage == "server.key of an older set":
        files["server.key"] = older["server.key"]
    elif damage == "peer.key garbage":
        files["peer.key"] = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    else:
        files["peer.crt"] = None
    assert problem(ca, files) == want
