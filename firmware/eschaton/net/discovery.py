"""asyncio adapter for neighbour discovery: broadcast signed beacons, feed received ones to the
sans-IO ``NeighbourTable`` (``eschaton.core.link.beacon``).

The socket binds ``0.0.0.0:<port>`` with ``SO_BROADCAST`` (and ``SO_BINDTODEVICE`` when an
interface is configured, so a node on both Wi-Fi and bat0 beacons only where it was told to).
Beacons go to the interface's broadcast address (``broadcast = "auto"``) or to the configured
one. With no interface configured, each beacon goes to the broadcast address of every IPv4
interface that is up and broadcast-capable, read afresh for each beacon: a node flashed with
the default config beacons on whatever it is plugged into, including a bat0 that comes up after
the node started. (255.255.255.255 would leave only by the default route, and a mesh node often
has none.)

A wildcard TCP listen address is announced as such (``tcp://0.0.0.0:9735``) unless an interface
is configured; receivers dial the address the beacon came from (``resolve_urls`` in
``eschaton.core.link.beacon``).

Refused beacons (stale, replayed, badly signed, malformed) are counted and logged at debug
level only: anyone on the segment can send garbage, and it must not flood the log.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from eschaton.core.link.announce import is_announcement, make_chain_announcement
from eschaton.core.link.beacon import NeighbourEvent, NeighbourFound, NeighbourTable, make_beacon
from eschaton.core.link.identity import NodeKeys
from eschaton.core.wire.errors import WireError
from eschaton.errors import LocalError
from eschaton.net.transport import parse_url

log = logging.getLogger(__name__)

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_IFF_UP, _IFF_BROADCAST, _IFF_LOOPBACK = 0x1, 0x2, 0x8


class DiscoveryError(LocalError):
    """Discovery cannot start (bad interface, port in use, no permission)."""


def _ifreq(interface: str, request: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), request, struct.pack("256s", interface.encode()[:15]))
        except OSError as exc:
            raise DiscoveryError(f"interface {interface!r}: no IPv4 address ({exc.strerror})") \
                from None
    return socket.inet_ntoa(res[20:24])


def interface_address(interface: str) -> str:
    """The IPv4 address of ``interface``."""
    return _ifreq(interface, _SIOCGIFADDR)


def interface_broadcast(interface: str) -> str:
    """The IPv4 broadcast address of ``interface``."""
    return _ifreq(interface, _SIOCGIFBRDADDR)


def broadcast_addresses() -> list[str]:
    """The IPv4 broadcast address of every interface that is up, broadcast-capable and not
    loopback (interfaces without an IPv4 address are skipped)."""
    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            req = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req), 16)[0]
                if flags & (_IFF_UP | _IFF_BROADCAST | _IFF_LOOPBACK) != _IFF_UP | _IFF_BROADCAST:
                    continue
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFBRDADDR, req)[20:24])
            except OSError:  # gone meanwhile, or no IPv4 address
                continue
            if addr != "0.0.0.0" and addr not in out:
                out.append(addr)
    return out


def advertised_urls(listen: Sequence[str], interface: str | None) -> list[str]:
    """URLs worth announcing: wildcard TCP listen addresses become the interface's address, or
    stay wildcards without one (receivers dial the beacon's source address); serial and mem
    URLs are not announced."""
    out: list[str] = []
    for url in listen:
        parsed = parse_url(url)
        if parsed.scheme != "tcp" or parsed.port in (None, 0):
            continue
        host = parsed.host
        if host in ("", "0.0.0.0", "::"):
            host = "0.0.0.0" if interface is None else interface_address(interface)
        out.append(f"tcp://{host}:{parsed.port}")
    return out


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: Discovery) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._on_datagram(data, f"{addr[0]}:{addr[1]}")

    def error_received(self, exc: Exception) -> None:
        log.debug("beacon not sent: %s", exc)  # e.g. an interface went down; the next one retries


class Discovery:
    """Beacons our URLs every ``interval`` seconds and reports neighbours to ``on_event``."""

    def __init__(self, keys: NodeKeys, *, port: int, interval: float,
                 urls: Sequence[str] | Callable[[], Sequence[str]],
                 on_event: Callable[[NeighbourEvent], None],
                 interface: str | None = None, broadcast: str = "auto", name: str = "",
                 max_age: float = 60.0, expiry: float = 45.0, strict_clock: bool = False,
                 on_refused: Callable[[str, str], None] | None = None,
                 chain_url: str | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.port = port
        self.interval = interval
        self.interface = interface
        self.broadcast = broadcast
        self.name = name
        self._urls = urls
        self._on_event = on_event
        self._on_refused = on_refused
        self.chain_url = chain_url
        """The chain this node serves (``[chain] serve``), announced after each beacon
        (``eschaton.core.link.announce``); None: nothing announced."""
        self._clock = wall_clock
        self._mono = monotonic
        self.table = NeighbourTable(keys.node_id, max_age=max_age, expiry=expiry,
                                    strict_clock=strict_clock)
        self.refused = 0
        """Beacons refused (stale, replayed, bad signature, malformed)."""
        self.sent = 0
        self._seq = 0
        self._dest = ""
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    def _destinations(self) -> list[str]:
        if self.broadcast != "auto":
            return [self.broadcast]
        if self.interface is not None:
            return [self._dest]
        return broadcast_addresses()  # read for each beacon: interfaces come and go

    def urls(self) -> list[str]:
        return list(self._urls() if callable(self._urls) else self._urls)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if self.interface is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                self.interface.encode())
            sock.bind(("0.0.0.0", self.port))
            sock.setblocking(False)
            if self.broadcast == "auto" and self.interface is not None:
                self._dest = interface_broadcast(self.interface)
        except OSError as exc:
            sock.close()
            raise DiscoveryError(f"discovery on port {self.port} "
                                 f"({self.interface or 'all interfaces'}): {exc}") from None
        except DiscoveryError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=sock)
        self._task = loop.create_task(self._beacon_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def send_beacon(self) -> None:
        """One beacon to each destination (a send error is reported to ``_Proto.error_received``
        by asyncio, per destination, so one interface going down silences no other)."""
        if self._transport is None:
            return
        self._seq += 1
        ts_ms = int(self._clock() * 1000)
        datagram = make_beacon(self.keys, urls=self.urls(), ts_ms=ts_ms, seq=self._seq, name=self.name)
        announcement = (make_chain_announcement(self.keys, url=self.chain_url, ts_ms=ts_ms, seq=self._seq)
                        if self.chain_url else None)
        for dest in self._destinations():
            self._transport.sendto(datagram, (dest, self.port))
            self.sent += 1
            if announcement is not None:
                self._transport.sendto(announcement, (dest, self.port))

    async def _beacon_loop(self) -> None:
        while True:
            try:
                self.send_beacon()
            except OSError as exc:  # e.g. the interface went down: keep trying
                log.warning("beacon not sent: %s", exc)
            for ev in self.table.expire(self._mono()):
                self._emit(ev)
            await asyncio.sleep(self.interval)

    def _on_datagram(self, data: bytes, source: str) -> None:
        if is_announcement(data):
            return  # a service announcement: read by eschaton.net.chainfind before the chain starts
        try:
            events = self.table.receive(data, self._clock(), source, self._mono())
        except WireError as exc:
            self.refused += 1
            log.debug("beacon from %s refused: %s", source, exc)
            if self._on_refused is not None:
                self._on_refused(source, str(exc))
            return
        for ev in events:
            if isinstance(ev, NeighbourFound) and abs(ev.clock_offset) > self.table.max_skew:
                # Not refused (see the table's rules), but timestamps this node exchanges with
                # that one (invoices, offers' expiry) will disagree: someone should set a clock.
                log.warning("neighbour %s's clock is %+.0f s from ours; without a real-time clock "
                            "a node needs NTP (or a GPS or RTC module) to keep time",
                            ev.node_id.short(), ev.clock_offset)
            self._emit(ev)

    def _emit(self, ev: NeighbourEvent) -> None:
        try:
            self._on_event(ev)
        except Exception:  # supervision boundary: a bad callback must not stop discovery
            log.exception("discovery event handler failed")
