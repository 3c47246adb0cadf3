"""One small transport interface, chosen by URL (``tcp://``, ``udp://``, ``serial://``, ``mem://``,
``ble://``).

A transport moves whole frames (one frame = one Noise message). The link above never knows
which transport it runs on. Each scheme module registers a ``Transport`` with
``register_scheme``; ``connect(url)`` and ``listen(url, on_stream)`` pick it by the URL scheme.
"""
from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from eschaton.core.wire.framing import MAX_FRAME
from eschaton.errors import LocalError, TransientError


class TransportError(TransientError):
    """A transport failed in a way that may go away (refused, reset, device vanished)."""


class TransportClosed(TransportError):
    """The other end closed the stream (or we did)."""


class BadTransportUrl(LocalError):
    """A transport URL that cannot be used (unknown scheme, missing port, bad option)."""


class TransportUnavailable(LocalError):
    """A registered scheme that this build or machine cannot provide."""


@dataclass(frozen=True, slots=True)
class TransportUrl:
    """A parsed transport URL."""

    url: str
    scheme: str
    host: str
    port: int | None
    path: str
    query: dict[str, str] = field(default_factory=dict)
    netloc: str = ""
    """The raw authority part (e.g. a BLE address ``AA:BB:CC:DD:EE:FF``)."""

    def require_port(self, *, allow_zero: bool = False) -> int:
        lo = 0 if allow_zero else 1
        if self.port is None:
            raise BadTransportUrl(f"{self.url}: needs a port {lo}..65535")
        if self.port == -1:
            raise BadTransportUrl(f"{self.url}: the port must be a number in {lo}..65535")
        if not lo <= self.port <= 65535:
            raise BadTransportUrl(f"{self.url}: the port is out of range {lo}..65535")
        return self.port


def parse_url(url: str) -> TransportUrl:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BadTransportUrl(f"{url!r}: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        # Digits only: above 65535 (65536 stands for all of them, so that require_port says "out
        # of range"); anything else is not a number (-1). Only schemes that need a port complain.
        port = 65536 if parts.netloc.rpartition(":")[2].isdigit() else -1
    if not parts.scheme:
        raise BadTransportUrl(f"{url!r}: missing scheme (e.g. tcp://host:port)")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return TransportUrl(url, parts.scheme.lower(), parts.hostname or "", port, parts.path, query,
                        parts.netloc)


class FrameStream(abc.ABC):
    """A bidirectional stream of frames to one peer."""

    peer: str = ""
    """Human-readable description of the other end (address, device), for logs."""
    source: str = ""
    """Where an inbound stream came from, for per-source admission limits: the IP address for
    TCP (without the port: one host opening many connections is one source), else ``peer``."""
    max_frame: int = MAX_FRAME
    """Largest frame the reader accepts now. The session lowers it during the handshake, whose
    messages are small, so that a stranger's length prefix cannot make us buffer 64 KiB."""

    @abc.abstractmethod
    async def read_frame(self) -> bytes:
        """Next frame. Raises ``TransportClosed`` at the end, ``FrameError`` for one bad frame
        (the stream stays usable if the framing can resynchronise, e.g. on serial)."""

    @abc.abstractmethod
    async def write_frame(self, frame: bytes) -> None:
        """Send one frame (raises ``TransportClosed`` if the stream is gone)."""

    async def write_frames(self, frames: Sequence[bytes]) -> None:
        """Send several frames in order; streams that can coalesce them into one write do."""
        for frame in frames:
            await self.write_frame(frame)

    @abc.abstractmethod
    async def close(self) -> None:
        """Close; idempotent. A ``read_frame`` pending in another task wakes up and raises
        ``TransportClosed`` (the session relies on this to stop its reader)."""


class Listener(abc.ABC):
    """Accepts streams until closed."""

    url: str = ""
    """The URL actually bound (e.g. with the kernel-chosen port filled in)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop accepting; idempotent. Streams already accepted stay open."""


OnStream = Callable[[FrameStream], Awaitable[None]]


class Transport(Protocol):
    async def connect(self, url: TransportUrl, *, timeout: float) -> FrameStream: ...

    async def listen(self, url: TransportUrl, on_stream: OnStream) -> Listener: ...


_SCHEMES: dict[str, Transport] = {}


def register_scheme(scheme: str, transport: Transport) -> None:
    """Make ``scheme://`` URLs use ``transport`` (later registrations replace earlier ones)."""
    _SCHEMES[scheme.lower()] = transport


def schemes() -> list[str]:
    return sorted(_SCHEMES)


def _transport(url: TransportUrl) -> Transport:
    t = _SCHEMES.get(url.scheme)
    if t is None:
        raise BadTransportUrl(f"{url.url}: unknown scheme {url.scheme!r}; known: {schemes()}")
    return t


async def connect(url: str, *, timeout: float = 10.0) -> FrameStream:
    """Open a frame stream to ``url``."""
    parsed = parse_url(url)
    return await _transport(parsed).connect(parsed, timeout=timeout)


async def listen(url: str, on_stream: OnStream) -> Listener:
    """Accept frame streams on ``url``; ``on_stream`` runs as a task per stream and owns it."""
    parsed = parse_url(url)
    return await _transport(parsed).listen(parsed, on_stream)
