"""What a ``Link`` (``eschaton.core.link.link``) is configured with, the states it moves
through (a declared transition table) and the events it hands back. Plain frozen data: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from eschaton.core.link.identity import NodeId
from eschaton.core.wire.codec import Message
from eschaton.errors import EschatonError

PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
"""Link protocol versions this build speaks."""


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class LinkState(Enum):
    IDLE = "idle"
    HANDSHAKE = "handshake"
    AWAIT_INIT = "await_init"
    OPEN = "open"
    CLOSED = "closed"


TRANSITIONS: dict[LinkState, frozenset[LinkState]] = {
    LinkState.IDLE: frozenset({LinkState.HANDSHAKE, LinkState.CLOSED}),
    LinkState.HANDSHAKE: frozenset({LinkState.AWAIT_INIT, LinkState.CLOSED}),
    LinkState.AWAIT_INIT: frozenset({LinkState.OPEN, LinkState.CLOSED}),
    LinkState.OPEN: frozenset({LinkState.CLOSED}),
    LinkState.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Tunables of one link."""

    versions: tuple[int, ...] = PROTOCOL_VERSIONS
    """Protocol versions we accept; the highest common one is used."""
    features: frozenset[int] = frozenset()
    """Feature bits announced in ``init``: those of the services this node runs."""
    name: str = ""
    """Human-readable node name announced in ``init`` (may be empty)."""
    handshake_timeout: float = 10.0
    """Seconds from start until the link must be OPEN."""
    ping_interval: float = 30.0
    """Seconds of silence from the peer before we ping it."""
    pong_timeout: float = 20.0
    """Seconds to wait for any frame after a ping before declaring the peer dead."""


# ---- events -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Keys are agreed and the peer is authenticated; ``init`` has been queued."""

    remote: NodeId
    version: int


@dataclass(frozen=True, slots=True)
class LinkOpen:
    """The peer's ``init`` arrived: application messages may flow."""

    remote: NodeId
    version: int
    features: frozenset[int]
    name: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An application message (anything but init/ping/pong/error/warning)."""

    message: Message


@dataclass(frozen=True, slots=True)
class MessageIgnored:
    """The peer sent a message id this table does not know, and it is odd: ignored."""

    type_id: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    nonce: int
    rtt: float


@dataclass(frozen=True, slots=True)
class WarningReceived:
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class LinkClosed:
    """The link is over. ``error`` is None for an orderly local close."""

    reason: str
    error: EschatonError | None = None
    by_peer: bool = False


Event = (HandshakeComplete | LinkOpen | MessageReceived | MessageIgnored | PongReceived
         | WarningReceived | LinkClosed)
