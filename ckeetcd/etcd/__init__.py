"""The TLS-capable etcd client (a thin layer on aetcd's stubs)."""

from ckeetcd.core.keyspace import prefix_end
from ckeetcd.etcd.client import EtcdClient, EtcdError, KeyValue
from ckeetcd.etcd.pool import ClientPool

__all__ = ["ClientPool", "EtcdClient", "EtcdError", "KeyValue", "prefix_end"]
