"""ckeetcd: bootstraps and keeps healthy a TLS + RBAC etcd cluster."""

__version__ = "0.1.0"
