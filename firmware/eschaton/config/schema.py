"""The validated node configuration: frozen dataclasses, one docstring per field.

Built only by ``eschaton.config.loader``; the rest of the node reads these and never the TOML.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # an annotation only: a thin client reading [api] does not load the crypto
    from eschaton.core.link.identity import NodeId


@dataclass(frozen=True, slots=True)
class NodeSection:
    datadir: Path
    """Directory for the node key, databases, API socket (created 0700 if missing)."""
    name: str
    """Human-readable name announced to peers (``init`` and beacons); may be empty."""


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    enabled: bool
    """Send and listen for signed UDP beacons."""
    interface: str | None
    """Network interface to beacon on (e.g. ``bat0``, ``wlan0``); None = every IPv4 interface
    that is up with a broadcast address, looked up again for each beacon."""
    port: int
    """UDP port of beacons (same on every node of a segment)."""
    interval: float
    """Seconds between our beacons."""
    broadcast: str
    """Destination address: ``auto`` (the interface's broadcast address, or every interface's
    without an interface) or an explicit IPv4 broadcast address."""
    max_age: float
    """With ``strict_clock``: a first beacon from a node older than this many seconds is refused."""
    expiry: float
    """A neighbour silent for this many seconds is forgotten."""
    strict_clock: bool = False
    """Also refuse first beacons whose timestamp is off our clock (only for meshes with
    synchronised clocks; a Pi has no real-time clock)."""


@dataclass(frozen=True, slots=True)
class PeerConfig:
    node_id: NodeId
    """The peer's node id (64 hex digits): its key is pinned, nobody else may answer."""
    url: str
    """Where to dial it, e.g. ``tcp://10.0.0.2:9735`` or ``serial:///dev/ttyAMA0?baud=115200``."""
    name: str
    """Local nickname for logs and the CLI."""


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    listen: tuple[str, ...]
    """Transport URLs to accept links on."""
    advertise: tuple[str, ...]
    """URLs announced in beacons; empty = derived from ``listen`` and the discovery interface."""
    discovery: DiscoveryConfig
    """Neighbour discovery by signed beacons."""
    peers: tuple[PeerConfig, ...]
    """Static peers, dialled at start and kept connected."""
    accept: str = "any"
    """Who may link to us: ``any`` authenticated node, or only ``known`` (pinned) peers: the
    ``[[network.peers]]``, peers dialled with ``peer connect`` and peers we have channels with."""
    max_pending_handshakes: int = 64
    """Inbound connections whose link is not open yet, at most; more are closed at once."""
    max_pending_per_address: int = 8
    """... of them from one source address."""
    max_links: int = 64
    """Established inbound links from peers that are not pinned, at most."""
    handshake_timeout: float = 10.0
    """Seconds a connection may take to open its link; then it is closed."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    socket: Path | None
    """Unix socket of the local control API (None disables it)."""
    tcp_port: int | None
    """If set, also listen on 127.0.0.1 at this port (never on other addresses)."""
    token_file: Path
    """File (0600) holding the API bearer token."""


@dataclass(frozen=True, slots=True)
class ChainConfig:
    backend: str
    """``embedded`` (libbitcoinkernel in-process) or ``electrum`` (a remote Electrum server)."""
    network: str
    """``regtest``, ``signet``, ``testnet`` or ``mainnet``."""
    datadir: Path | None
    """Block and chainstate directory of the embedded backend."""
    url: str | None
    """Electrum server URL, e.g. ``tcp://127.0.0.1:50001`` (electrum backend only)."""
    serve: tuple[str, int] | None = None
    """Embedded backend: also serve the chain over Electrum on this (host, port), e.g. the
    gateway's mesh address, so other nodes on the mesh use it (``backend = "electrum"``). None:
    loopback only, on a port the kernel picks (written to ``chain/electrum.port``)."""


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
    metering: Any
    """What ``eschaton.metering.config.parse_metering`` made of ``[[meter]]``/``[[valve]]``
    (None when that module is absent or the sections are empty)."""
    microgrid: Any = None
    """``[microgrid]``: ``eschaton.daemon.microgrid_config.MicrogridConfig`` or None."""
    bandwidth: Any = ()
    """``[[bandwidth]]``: ``eschaton.daemon.bandwidth_config.BandwidthEntry`` tuple (may be empty)."""


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
