"""Node configuration: ``load_config(path)`` -> frozen ``NodeConfig`` (see ``schema``);
``load_client_config(path)`` -> ``ClientConfig``, the part a client of the running node needs."""
from __future__ import annotations

from eschaton.config.loader import (
    ConfigContext,
    ConfigError,
    find_line,
    load_client_config,
    load_config,
    parse_client_config,
    parse_config,
)
from eschaton.config.schema import (
    ApiConfig,
    ChainConfig,
    ClientConfig,
    DiscoveryConfig,
    NetworkConfig,
    NodeConfig,
    NodeSection,
    PeerConfig,
)

__all__ = [
    "ApiConfig", "ChainConfig", "ClientConfig", "ConfigContext", "ConfigError", "DiscoveryConfig",
    "NetworkConfig", "NodeConfig", "NodeSection", "PeerConfig", "find_line", "load_client_config",
    "load_config", "parse_client_config", "parse_config",
]
