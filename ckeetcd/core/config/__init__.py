"""Config file -> frozen, validated objects.

Every problem names the file and the dotted key, so an operator can fix a
config without reading our code. Loading never touches the cluster or the
state dir: a bad file changes nothing.
"""

from ckeetcd.core.config.load import (
    default_config_path,
    load_config,
    parse_config,
    syntax_error_key,
)
from ckeetcd.core.config.reader import member_address_problem
from ckeetcd.core.config.schema import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ETCD_FLAGS_REFUSED,
    ETCD_FLAGS_SET_BY_CKEETCD,
    MAX_BACKUPS,
    NAME_RE,
    ApiserverConfig,
    BackupConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DaemonConfig,
    EtcdConfig,
    KubernetesConfig,
    MaintenanceConfig,
    MemberConfig,
    MetricsConfig,
    Problem,
    SSHConfig,
    TLSConfig,
    UserConfig,
)

__all__ = [
    "CONFIG_ENV", "DEFAULT_CONFIG_PATH", "ETCD_FLAGS_REFUSED", "ETCD_FLAGS_SET_BY_CKEETCD",
    "MAX_BACKUPS", "NAME_RE", "ApiserverConfig", "BackupConfig", "ClusterConfig", "Config",
    "ConfigError", "DaemonConfig", "EtcdConfig", "KubernetesConfig", "MaintenanceConfig",
    "MemberConfig", "MetricsConfig", "Problem", "SSHConfig", "TLSConfig", "UserConfig",
    "default_config_path", "load_config", "member_address_problem", "parse_config",
    "syntax_error_key",
]
