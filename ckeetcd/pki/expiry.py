"""When each certificate of the cluster's trust expires, and which ones need attention.

`status` and the metrics show the CAs (client, and peer when the cluster has its
own), the daemon's root client certificate and each member's certificates. A CA
within CA_WARN_BEFORE of its end is a warning: replacing a CA is a rotation
that every member and client takes part in, so it must be planned well ahead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from ckeetcd.pki.authority import CLIENT, PEER, ca_paths

CA_WARN_BEFORE = dt.timedelta(days=365)


def not_after_of(path: Path) -> dt.datetime | None:
    """The end of validity of the PEM certificate at `path`; None when unreadable."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


def _entry(not_after: dt.datetime | None, now: dt.datetime, warn: dt.timedelta,
           **extra: Any) -> dict[str, Any]:
    if not_after is None:
        return {**extra, "not_after": None, "expiring": None}
    left = not_after - now
    return {**extra, "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days_left": round(left.total_seconds() / 86400, 1), "expiring": left <= warn}


def trust_view(pki_dir: Path, daemon_cert: Path, member_expiry: Mapping[str, float],
               member_warn: dt.timedelta, daemon_warn: dt.timedelta,
               now: dt.datetime) -> dict[str, Any]:
    """The `trust` object of `status --output json` (see docs/operator-guide.md)."""
    cas: dict[str, Any] = {}
    for role in (CLIENT, PEER):
        cert = ca_paths(pki_dir, role)[0]
        if cert.exists():
            cas[role] = _entry(not_after_of(cert), now, CA_WARN_BEFORE, file=str(cert))
    members = {
        name: _entry(dt.datetime.fromtimestamp(t, dt.timezone.utc), now, member_warn)
        for name, t in sorted(member_expiry.items())}
    view: dict[str, Any] = {
        "layout": "separate" if PEER in cas else ("one-ca" if cas else None),
        "cas": cas,
        "daemon_certificate": _entry(not_after_of(daemon_cert), now, daemon_warn,
                                     file=str(daemon_cert)),
        "member_certificates": members,
    }
    view["warnings"] = warnings(view)
    return view


def warnings(view: Mapping[str, Any]) -> list[str]:
    """One line per certificate that expires within its warning window."""
    out = [f"{role} CA expires {e['not_after']} ({e['days_left']:g} days): plan its rotation"
           for role, e in view["cas"].items() if e["expiring"]]
    d = view["daemon_certificate"]
    if d["expiring"]:
        out.append(f"daemon certificate expires {d['not_after']}: the daemon renews it; if "
                   "it does not, see the log for daemon_cert events")
    out += [f"member {n}'s certificates expire {e['not_after']}: renew-member-certs is due"
            for n, e in view["member_certificates"].items() if e["expiring"]]
    return out
