"""The validated node configuration: frozen dataclasses, one docstring per field.

Each section's dataclasses live with the code that parses that section (``node``, ``network``,
``api``, ``chain``, ``metering``, ``microgrid``, ``bandwidth``); this module puts them together.
Built only by ``eschaton.config.loader``; the rest of the node reads these and never the TOML.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eschaton.config import defaults as D
from eschaton.config.api import ApiConfig
from eschaton.config.chain import ChainConfig
from eschaton.config.channel import ChannelConfig
from eschaton.config.dashboard import DashboardConfig
from eschaton.config.dht import DhtConfig
from eschaton.config.network import DiscoveryConfig, NetworkConfig, PeerConfig
from eschaton.config.node import NodeSection
from eschaton.config.routing import RoutingConfig
from eschaton.config.stamp import StampConfig

if TYPE_CHECKING:  # annotations only: a client reading [node] and [api] loads none of these
    from eschaton.config.bandwidth import BandwidthEntry
    from eschaton.config.metering import MeteringConfig
    from eschaton.config.microgrid import MicrogridConfig

__all__ = [
    "ApiConfig", "ChainConfig", "ChannelConfig", "ClientConfig", "DiscoveryConfig", "NetworkConfig", "NodeConfig",
    "NodeSection", "PeerConfig",
]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    source: str
    """The file the configuration came from (for error messages)."""
    node: NodeSection
    """``[node]``."""
    network: NetworkConfig
    """``[network]``."""
    api: ApiConfig
    """``[api]``."""
    chain: ChainConfig
    """``[chain]``."""
    metering: MeteringConfig | None
    """``[hardware]``, ``[metering]``, ``[[meter]]``, ``[[valve]]``, ``[[relay]]``,
    ``[[tamper]]``; None when the file has none of them."""
    microgrid: MicrogridConfig | None = None
    """``[microgrid]``; None when absent."""
    bandwidth: tuple[BandwidthEntry, ...] = ()
    """``[[bandwidth]]`` (may be empty)."""
    channel: ChannelConfig = ChannelConfig(D.TURN_DWELL_MS / 1000)
    """``[channel]``."""
    dashboard: DashboardConfig | None = None
    """``[dashboard]``; None when absent or not enabled."""
    stamp: StampConfig = StampConfig()
    """``[stamp]``."""
    routing: RoutingConfig = RoutingConfig()
    """``[routing]``."""
    dht: DhtConfig = DhtConfig()
    """``[dht]``."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What a client of the running node (the CLI) reads from the node's config: where the node
    keeps its files and where its API listens. Built by ``loader.load_client_config``."""

    source: str
    """The file the configuration came from (for error messages)."""
    node: NodeSection
    """``[node]``."""
    api: ApiConfig
    """``[api]``."""
