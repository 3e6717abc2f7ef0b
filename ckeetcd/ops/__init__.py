"""One module per operation; each op is a few idempotent, recorded steps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ckeetcd.core.model import Op
from ckeetcd.ops import (
    add_member,
    apiserver_traffic,
    compact,
    defrag_member,
    disarm_alarm,
    ensure_rbac,
    promote_member,
    remove_member,
    renew_certs,
    start_member,
    stop_member,
)
from ckeetcd.ops.context import OpContext, OpFailed, Skip

OpFn = Callable[[OpContext, Op], Awaitable[None]]

OPS: dict[str, OpFn] = {
    "start-member": start_member.run,
    "restart-member": start_member.run,
    "stop-member": stop_member.run,
    "remove-member": remove_member.run,
    "add-member": add_member.run,
    "promote-member": promote_member.run,
    "ensure-rbac": ensure_rbac.run,
    "renew-member-certs": renew_certs.run,
    "stop-apiserver-traffic": apiserver_traffic.run,
    "publish-endpoints": apiserver_traffic.run,
    "compact": compact.run,
    "defrag-member": defrag_member.run,
    "disarm-alarm": disarm_alarm.run,
}

__all__ = ["OPS", "OpContext", "OpFailed", "Skip"]
