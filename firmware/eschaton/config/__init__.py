"""Node configuration: ``load_config(path)`` -> frozen ``NodeConfig`` (see ``schema``)."""
from __future__ import annotations

from eschaton.config.loader import ConfigContext, ConfigError, find_line, load_config, parse_config
from eschaton.config.schema import (
    ApiConfig,
    ChainConfig,
    DiscoveryConfig,
    NetworkConfig,
    NodeConfig,
    NodeSection,
    PeerConfig,
)

__all__ = [
    "ApiConfig", "ChainConfig", "ConfigContext", "ConfigError", "DiscoveryConfig",
    "NetworkConfig", "NodeConfig", "NodeSection", "PeerConfig", "find_line", "load_config",
    "parse_config",
]
