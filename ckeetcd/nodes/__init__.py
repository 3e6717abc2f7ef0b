"""How nodes are reached and members run on them."""

from ckeetcd.nodes.base import Archive, MemberRuntime, MemberSpec, member_flags
from ckeetcd.nodes.local import LocalRuntime, resolve_etcd_binary

__all__ = ["Archive", "LocalRuntime", "MemberRuntime", "MemberSpec", "member_flags",
           "resolve_etcd_binary"]
