"""Node configuration, read by one reader (``loader``) into frozen dataclasses (``schema``, and
one module per section); every default is in ``defaults`` and every mistake is a ``ConfigError``
naming file, key and line.

``load_config(path)`` -> ``NodeConfig`` (the node); ``load_client_config(path)`` ->
``ClientConfig`` (the part a client of the running node needs); ``load_metering_config(path)``
-> ``MeteringConfig`` (the hardware sections alone)."""
from __future__ import annotations

from eschaton.config.errors import ConfigContext, ConfigError, find_line
from eschaton.config.loader import (
    load_client_config,
    load_config,
    load_metering_config,
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
    "load_config", "load_metering_config", "parse_client_config", "parse_config",
]
