"""Typed errors of the link layer. All but ``LinkTimeout`` are the peer's fault."""
from __future__ import annotations

from eschaton.errors import LocalError, RemoteError, TransientError


class LinkError(RemoteError):
    """The peer broke the link protocol; the link is closed."""

    code = 1


class HandshakeError(LinkError):
    """The Noise handshake failed (wrong key, corrupted or malformed handshake message)."""

    code = 2


class PeerMismatch(LinkError):
    """The peer authenticated as another node than the one expected or claimed."""

    code = 3


class VersionMismatch(LinkError):
    """The two nodes share no protocol version."""

    code = 4


class DecryptError(LinkError):
    """A transport frame failed authentication: tampered, replayed, reordered or lost."""

    code = 5


class ProtocolViolation(LinkError):
    """A well-encrypted message that is malformed or not allowed in the current state."""

    code = 6


class PeerSentError(LinkError):
    """The peer sent an ``error`` message and closed the link."""

    code = 7


class NotAuthorised(LinkError):
    """An authenticated peer that our policy does not allow to link."""

    code = 9


class LinkTimeout(TransientError):
    """The handshake did not finish, or the peer stopped answering pings, in time."""

    code = 8


class LinkStateError(LocalError):
    """We called the link in a state that does not allow it (e.g. send before open)."""


class PeerLacksService(LocalError):
    """We tried to send a message of a service the peer did not announce in its ``init``."""
