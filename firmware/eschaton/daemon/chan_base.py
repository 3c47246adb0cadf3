"""What the parts of the channel service share (``eschaton.daemon.channels``): its errors, the
request timeouts, and the state the link and request sides read (set by
``ChannelService.__init__``)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from eschaton.channel.driver import ChannelEndpoint
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.daemon.events import EventStream
from eschaton.errors import LocalError, RemoteError, TransientError

if TYPE_CHECKING:
    from eschaton.channel.store import ChannelStore
    from eschaton.core.channel import Channel
    from eschaton.daemon.channels import _PeerMap
    from eschaton.daemon.payments import Payments

REQUEST_TIMEOUT = 30.0
WAIT_NOTE = 2.0  # s: a local request still waiting after this says, once, what it waits for


class ChannelRequestError(LocalError):
    pass


class PeerUnavailable(TransientError):
    pass


class Refused(RemoteError):
    """A channel message the core refused; the link stays up and the channel unchanged."""


class ChannelBase:
    """State shared by the sides of the channel service (see ``ChannelService.__init__``)."""

    node: Any
    store: ChannelStore
    peers: _PeerMap
    height: int
    endpoint: ChannelEndpoint
    stream: EventStream
    turn_requests_resent: int
    _changed: asyncio.Condition
    _outq: dict[str, asyncio.Queue[WireMessage]]
    _writers: dict[str, asyncio.Task[None]]
    _link_of: dict[str, Any]
    _open_links: dict[str, list[Any]]
    _locks: dict[bytes, asyncio.Lock]
    _busy: set[bytes]
    _deferred: dict[bytes, tuple[Any, WireMessage]]
    _rx: contextlib.AbstractContextManager[None] | None
    _rx_waiters: list[asyncio.Future[None]]
    _lock_waiters: int
    _local_staged: int
    turn_dwell: float
    turn_dwells: int
    _queued: dict[bytes, int]
    _dwell: dict[bytes, asyncio.TimerHandle]
    _dwelt: set[bytes]
    _last_local: dict[bytes, float]
    payments: Payments

    if TYPE_CHECKING:  # defined by ChannelService: the group commit and the wake-up
        def receive(self, session: Any, wm: WireMessage) -> None: ...

        def _open_rx(self) -> None: ...

        def _poke(self) -> None: ...

        def _retry_reanchor(self, ch: Channel) -> None: ...
