"""One small transport interface, chosen by URL (``tcp://``, ``udp://``, ``serial://``, ``mem://``,
``ble://``).

A transport moves whole frames (one frame = one Noise message). The link above never knows
which transport it runs on. Each scheme module registers a ``Transport`` with
``register_scheme``; URLs are parsed by ``eschaton.core.url`` (the configuration checks them
without loading this package); ``connect(url)`` and ``listen(url, on_stream)`` pick it by the URL scheme.
"""
from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from eschaton.core.url import BadTransportUrl as BadTransportUrl
from eschaton.core.url import TransportUrl as TransportUrl
from eschaton.core.url import parse_url as parse_url
from eschaton.core.wire.framing import MAX_FRAME
from eschaton.errors import LocalError, TransientError


class TransportError(TransientError):
    """A transport failed in a way that may go away (refused, reset, device vanished)."""


class TransportClosed(TransportError):
    """The other end closed the stream (or we did)."""


class TransportUnavailable(LocalError):
    """A registered scheme that this build or machine cannot provide."""


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
