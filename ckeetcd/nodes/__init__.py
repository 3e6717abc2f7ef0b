"""How nodes are reached and members run on them."""

from ckeetcd.nodes.base import MemberRuntime, MemberSpec, member_flags
from ckeetcd.nodes.local import LocalRuntime, resolve_etcd_binary

__all__ = ["LocalRuntime", "MemberRuntime", "MemberSpec", "member_flags", "resolve_etcd_binary"]
