"""``[network]``: where the node listens, who it links to, beacons, and its inbound limits."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eschaton.config import defaults as D
from eschaton.config.errors import KeyPath
from eschaton.config.section import Section
from eschaton.core.url import SCHEMES, BadTransportUrl, parse_url

if TYPE_CHECKING:  # an annotation only: a thin client reading [api] does not load the crypto
    from eschaton.core.link.identity import NodeId


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
    ble: bool = False
    """Also advertise over Bluetooth LE and dial neighbours found by scanning (needs a
    ``ble://`` URL in ``listen``; independent of ``enabled``, which is about UDP beacons)."""
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
    accept: str = D.ACCEPT
    """Who may link to us: ``any`` authenticated node, or only ``known`` (pinned) peers: the
    ``[[network.peers]]``, peers dialled with ``peer connect`` and peers we have channels with."""
    max_pending_handshakes: int = D.MAX_PENDING_HANDSHAKES
    """Inbound connections whose link is not open yet, at most; more are closed at once."""
    max_pending_per_address: int = D.MAX_PENDING_PER_ADDRESS
    """... of them from one source address."""
    max_links: int = D.MAX_LINKS
    """Established inbound links from peers that are not pinned, at most."""
    handshake_timeout: float = D.HANDSHAKE_TIMEOUT
    """Seconds a connection may take to open its link; then it is closed."""


def check_url(section: Section, key: str | int, url: str, *, path: KeyPath = (),
              listen: bool = False) -> str:
    """A transport URL; ``listen``: port 0 (the kernel picks one) is allowed."""
    where = tuple(path) or (*section.path, key)
    try:
        parsed = parse_url(url)
        if parsed.scheme in ("tcp", "udp"):
            parsed.require_port(allow_zero=listen)
    except BadTransportUrl as exc:
        raise section.ctx.error(where, str(exc)) from None
    if parsed.scheme not in SCHEMES:
        raise section.ctx.error(where, f"unknown transport {parsed.scheme!r}; use one of "
                                       f"{', '.join(SCHEMES)}")
    if parsed.scheme == "ble":
        from eschaton.core.link.ble import parse_ble_url  # only where a ble:// URL is used
        if key == "advertise":
            raise section.ctx.error(where, "ble:// URLs are not announced in beacons (an adapter "
                                           "name means nothing to another node); use "
                                           "[network.discovery] ble = true")
        try:
            parse_ble_url(parsed, dial=not listen)
        except BadTransportUrl as exc:
            raise section.ctx.error(where, str(exc)) from None
    return url


def _parse_discovery(net_s: Section) -> DiscoveryConfig:
    disc_s = net_s.sub("discovery")
    iface = disc_s.get_str("interface", "") or None
    if iface is not None and (len(iface) > 15 or "/" in iface or " " in iface):
        raise disc_s.err("interface", f"{iface!r} is not an interface name")
    broadcast = disc_s.get_str("broadcast", D.DISCOVERY_BROADCAST)
    if broadcast != "auto":
        try:
            ipaddress.IPv4Address(broadcast)
        except ValueError:
            raise disc_s.err("broadcast", "must be 'auto' or an IPv4 address") from None
    discovery = DiscoveryConfig(
        enabled=disc_s.get_bool("enabled", D.DISCOVERY_ENABLED),
        interface=iface,
        port=disc_s.get_int("port", D.DISCOVERY_PORT, 1, 65535),
        interval=disc_s.get_float("interval", D.DISCOVERY_INTERVAL, 0.1, 3600.0),
        broadcast=broadcast,
        max_age=disc_s.get_float("max_age", D.DISCOVERY_MAX_AGE, 1.0, 86400.0),
        expiry=disc_s.get_float("expiry", D.DISCOVERY_EXPIRY, 1.0, 86400.0),
        strict_clock=disc_s.get_bool("strict_clock", D.DISCOVERY_STRICT_CLOCK),
        ble=disc_s.get_bool("ble", D.DISCOVERY_BLE),
    )
    disc_s.done()
    return discovery


def _parse_peers(net_s: Section) -> tuple[PeerConfig, ...]:
    # Node ids need the crypto: imported when a node's config is read, not by a thin client.
    from eschaton.core.link.identity import IdentityError, NodeId

    peers_raw = net_s.raw("peers", [])
    if not isinstance(peers_raw, list):
        raise net_s.err("peers", "must be an array of tables ([[network.peers]])")
    peers: list[PeerConfig] = []
    for i, p in enumerate(peers_raw):
        ps = Section(net_s.ctx, ("network", "peers", i), p)
        try:
            node_id = NodeId.from_hex(ps.get_str("id", ""))
        except IdentityError as exc:
            raise ps.err("id", str(exc)) from None
        url = ps.get_str("url", "")
        if not url:
            raise ps.err("url", "is required")
        check_url(ps, "url", url)
        peers.append(PeerConfig(node_id, url, ps.get_str("name", "")))
        ps.done()
    ids = [p.node_id for p in peers]
    if len(set(ids)) != len(ids):
        raise net_s.err("peers", "the same node id is listed twice")
    return tuple(peers)


def parse_network(root: Section) -> NetworkConfig:
    net_s = root.sub("network")
    listen = tuple(check_url(net_s, "listen", u, path=("network", "listen", i), listen=True)
                   for i, u in enumerate(net_s.get_str_list("listen", D.LISTEN)))
    advertise = tuple(check_url(net_s, "advertise", u, path=("network", "advertise", i))
                      for i, u in enumerate(net_s.get_str_list("advertise", ())))
    if len(advertise) > 8:
        raise net_s.err("advertise", "at most 8 URLs fit in a beacon")
    discovery = _parse_discovery(net_s)
    if discovery.ble and not any(u.startswith("ble://") for u in listen):
        raise net_s.sub("discovery").err("ble", "needs a ble:// URL in [network] listen "
                                                "(e.g. \"ble://hci-socket:0\")")
    peers = _parse_peers(net_s)
    accept = net_s.get_choice("accept", D.ACCEPT, ("any", "known"))
    max_pending = net_s.get_int("max_pending_handshakes", D.MAX_PENDING_HANDSHAKES, 1, 65536)
    per_address = net_s.get_int("max_pending_per_address", D.MAX_PENDING_PER_ADDRESS, 1, 65536)
    if per_address > max_pending:
        raise net_s.err("max_pending_per_address",
                        f"must be at most max_pending_handshakes ({max_pending})")
    max_links = net_s.get_int("max_links", D.MAX_LINKS, 0, 65536)
    handshake_timeout = net_s.get_float("handshake_timeout", D.HANDSHAKE_TIMEOUT, 0.5, 600.0)
    net_s.done()
    return NetworkConfig(listen, advertise, discovery, peers, accept, max_pending,
                         per_address, max_links, handshake_timeout)
