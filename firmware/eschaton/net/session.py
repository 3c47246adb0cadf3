"""asyncio adapter: drives one sans-IO ``Link`` over one ``FrameStream``.

Rules / theory of operation:
- One task (``run``) reads frames and feeds the link; a second sleeps until the link's next
  deadline. Both, and ``send``, flush the link's outgoing frames under one lock, so encrypted
  frames reach the stream in nonce order.
- Incoming application messages are handed, in arrival order, to the node's ``Router``
  (``eschaton.net.router``), which calls the one handler registered for the row. The next frame
  is not read until the handler returns: channel state changes stay ordered, and a slow handler
  applies back-pressure to the peer. A message no service here handles is ignored when its id
  is odd and closes the link when it is even (the router decides; the link does the same for
  ids the table does not have).
- A handler raising ``RemoteError`` (the peer's message was bad for the layer above) closes the
  link with an ``error`` message. Any other handler exception is a bug: logged with its
  traceback, link closed (supervision boundary: one broken session must not kill the node).
- The router learns of opened and closed links (its services' hooks); ``on_open(session)`` is
  called first, for the network node's own bookkeeping. The link announces the router's
  feature bits in ``init``.
- Until the handshake is done the stream accepts only handshake-sized frames
  (``Link.max_incoming_frame``). An inbound link that closes before its peer was authenticated
  is logged at debug level only: strangers can cause any number of those, and ``serve``'s
  ``admit`` hook (the node's admission control) counts them instead. Admission may evict a
  pending handshake to make room for a newcomer; its ticket's ``on_evict`` closes that session.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from eschaton.core.link.admission import Ticket
from eschaton.core.link.errors import LinkError, LinkTimeout
from eschaton.core.link.identity import NodeId, NodeKeys
from eschaton.core.link.link import (
    Event,
    HandshakeComplete,
    Link,
    LinkClosed,
    LinkConfig,
    LinkOpen,
    LinkState,
    MessageIgnored,
    MessageReceived,
    PongReceived,
    Role,
    WarningReceived,
)
from eschaton.core.wire.codec import Message, make
from eschaton.core.wire.errors import WireError
from eschaton.errors import EschatonError, RemoteError
from eschaton.net.router import Router
from eschaton.net.transport import FrameStream, Listener, TransportClosed, connect, listen

log = logging.getLogger(__name__)

OnOpen = Callable[["Session"], None]
"""Told when a session's link opens, before the router's services are."""
Authorize = Callable[[NodeId], bool]
"""Decides whether an authenticated peer may keep its link (friend-to-friend allow-list)."""
Admit = Callable[[FrameStream], Ticket | None]
"""Admission control of inbound streams: a ticket holding the stream's slots, or None to close
the stream at once (the hook logs and counts the refusal)."""


class Session:
    """One live link to one peer. Build with ``dial``/``serve`` or directly for tests."""

    def __init__(self, link: Link, stream: FrameStream, *, router: Router | None = None,
                 on_open: OnOpen | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.stream = stream
        self.router = router if router is not None else Router()
        """Where received messages go (a session without services gets an empty router)."""
        self._on_open = on_open
        self._clock = clock
        self._write_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[LinkOpen] = loop.create_future()
        self.closed: asyncio.Future[LinkClosed] = loop.create_future()
        self._pongs: dict[int, asyncio.Future[float]] = {}
        self._timer_wakeup = asyncio.Event()
        self.last_rtt: float | None = None

    # ---- properties ----------------------------------------------------------------------------
    @property
    def remote(self) -> NodeId | None:
        return self.link.remote

    @property
    def version(self) -> int | None:
        return self.link.version

    @property
    def is_open(self) -> bool:
        return self.link.is_open and not self.closed.done()

    def __repr__(self) -> str:
        who = self.remote.short() if self.remote else "?"
        return f"Session({who} via {self.stream.peer}, {self.link.state.name})"

    # ---- application API -----------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        """Send one message (raises ``LinkStateError`` if the link is not open)."""
        self.link.send(message)
        await self._flush()

    async def send_many(self, messages: Sequence[Message]) -> None:
        """Send messages in order, written to the stream together (one write on TCP)."""
        for m in messages:
            self.link.send(m)
        await self._flush()

    async def send_message(self, name: str, /, **fields: Any) -> None:
        """``send(make(name, **fields))``."""
        await self.send(make(name, **fields))

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time in seconds of one ping/pong."""
        nonce = self.link.ping(self._clock())
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pongs[nonce] = fut
        self._timer_wakeup.set()  # the pong deadline may be earlier than the timer's sleep
        await self._flush()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pongs.pop(nonce, None)

    async def wait_open(self, timeout: float | None = None) -> LinkOpen:
        """Wait until the link is open; raises the link's typed error if it closed instead."""
        either: list[asyncio.Future[Any]] = [self.opened, self.closed]
        open_or_closed = asyncio.ensure_future(asyncio.wait(
            either, return_when=asyncio.FIRST_COMPLETED))
        try:
            await asyncio.wait_for(open_or_closed, timeout)
        except TimeoutError:
            raise LinkTimeout("link did not open in time") from None
        if self.opened.done():
            return self.opened.result()
        ev = self.closed.result()
        raise ev.error if ev.error is not None else LinkError(ev.reason)

    async def close(self, reason: str = "closed locally") -> None:
        """Close the link, telling the peer why: on a serial line there is no stream end to see,
        and without the ``error`` message the peer would only notice at its keepalive timeout."""
        await self._handle(self.link.close(reason, send_error=True))

    # ---- driving ---------------------------------------------------------------------------------
    async def run(self) -> LinkClosed:
        """Run the link until it closes; returns the close event. Owns (closes) the stream."""
        if self.link.state is LinkState.IDLE:
            self.link.start()
        timer = asyncio.get_running_loop().create_task(self._timer())
        try:
            await self._flush()
            while not self.link.is_closed:
                self.stream.max_frame = self.link.max_incoming_frame
                try:
                    frame = await self.stream.read_frame()
                except TransportClosed:
                    await self._handle(self.link.connection_lost(self._clock()))
                    break
                except WireError as exc:
                    # Bad framing (e.g. serial CRC): the Noise sequence is broken anyway. Tell
                    # the peer (our sending direction still works) so it redials at once.
                    await self._handle(self.link.close(f"bad frame: {exc}", error=exc,
                                                       send_error=True))
                    break
                # The timer is not woken per frame: receiving only pushes deadlines later, and a
                # timer that fires early finds nothing to do and sleeps again.
                await self._handle(self.link.receive_frame(frame, self._clock()))
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            if not self.link.is_closed:  # cancelled from outside
                await self._handle(self.link.close("session cancelled"))
            with contextlib.suppress(EschatonError, OSError):
                await self._flush()  # last error message, best effort
            await self.stream.close()
        assert self.link.close_event is not None
        return self.link.close_event

    async def _timer(self) -> None:
        while not self.link.is_closed:
            deadline = self.link.next_deadline()
            if deadline is None:
                return
            self._timer_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wakeup.wait(),
                                       max(0.0, deadline - self._clock()))
            await self._handle(self.link.handle_timer(self._clock()))

    async def _flush(self) -> None:
        if not self.link.has_data_to_send:
            return  # most received frames need no reply: skip the lock
        async with self._write_lock:
            frames = self.link.data_to_send()
            if not frames:
                return
            try:
                await self.stream.write_frames(frames)
            except TransportClosed:
                await self._handle_nolock(self.link.connection_lost(self._clock()))

    async def _handle(self, events: list[Event]) -> None:
        await self._handle_nolock(events)
        await self._flush()  # replies, pings, or the final error message
        if self.link.is_closed:
            await self.stream.close()

    async def _handle_nolock(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, HandshakeComplete):
                log.debug("link %s: handshake with %s (v%d)", self.stream.peer,
                          ev.remote.short(), ev.version)
            elif isinstance(ev, LinkOpen):
                log.info("link open to %s via %s", ev.remote.short(), self.stream.peer)
                if not self.opened.done():
                    self.opened.set_result(ev)
                if self._on_open is not None:
                    try:
                        self._on_open(self)
                    except Exception:  # supervision boundary: bookkeeping must not kill the loop
                        log.exception("on_open failed for %s", self._who())
                await self.router.link_opened(self)
            elif isinstance(ev, MessageReceived):
                await self._deliver(ev.message)
            elif isinstance(ev, MessageIgnored):
                self.router.ignored_unknown(self, ev.type_id)
            elif isinstance(ev, PongReceived):
                self.last_rtt = ev.rtt
                fut = self._pongs.get(ev.nonce)
                if fut is not None and not fut.done():
                    fut.set_result(ev.rtt)
            elif isinstance(ev, WarningReceived):
                log.warning("peer %s warns (%d): %s", self._who(), ev.code, ev.text)
            elif isinstance(ev, LinkClosed):
                if ev.error is not None:
                    stranger = self.link.role is Role.RESPONDER and self.remote is None
                    log.log(logging.DEBUG if stranger else logging.INFO,
                            "link to %s closed: %s", self._who(), ev.reason)
                if not self.closed.done():
                    self.closed.set_result(ev)
                for fut in self._pongs.values():
                    if not fut.done():
                        fut.set_exception(ev.error or LinkError(ev.reason))
                await self.router.link_closed(self, ev)

    def _who(self) -> str:
        return self.remote.short() if self.remote else self.stream.peer

    async def _deliver(self, msg: Message) -> None:
        try:
            await self.router.deliver(self, msg)
        except RemoteError as exc:
            await self._handle_nolock(self.link.close(str(exc), error=exc, send_error=True))
        except EschatonError as exc:
            log.error("handler refused %s from %s: %s", msg.name, self._who(), exc)
            await self._handle_nolock(self.link.close(f"local error handling {msg.name}",
                                                      error=exc, send_error=True))
        except Exception as exc:  # supervision boundary: a handler bug closes this link only
            log.exception("handler for %s from %s crashed", msg.name, self._who())
            err = LinkError(f"internal error handling {msg.name}: {type(exc).__name__}")
            await self._handle_nolock(self.link.close(str(err), error=err, send_error=True))


def _link_config(config: LinkConfig | None, router: Router | None) -> LinkConfig:
    """The link announces the features of the router's services, and no others."""
    config = config if config is not None else LinkConfig()
    return replace(config, features=router.features if router is not None else frozenset())


async def open_session(stream: FrameStream, keys: NodeKeys, role: Role, *,
                       remote: NodeId | None = None, config: LinkConfig | None = None,
                       router: Router | None = None, on_open: OnOpen | None = None,
                       authorize: Authorize | None = None,
                       clock: Callable[[], float] = time.monotonic) -> tuple[Session, asyncio.Task[LinkClosed]]:
    """Wrap an already-open stream in a session and start running it."""
    link = Link(keys, role, now=clock(), ephemeral=secrets.token_bytes(32), remote=remote,
                config=_link_config(config, router), authorize=authorize)
    session = Session(link, stream, router=router, on_open=on_open, clock=clock)
    task = asyncio.get_running_loop().create_task(session.run())
    return session, task


async def dial(url: str, keys: NodeKeys, remote: NodeId, *,
               config: LinkConfig | None = None,
               router: Router | None = None, on_open: OnOpen | None = None,
               timeout: float = 15.0) -> tuple[Session, asyncio.Task[LinkClosed]]:
    """Connect to ``remote`` at ``url`` and wait until the link is open.

    Returns the session and its running task (await the task to learn how it ended). Raises a
    ``TransportError`` if the connection fails and the link's typed error (``HandshakeError``,
    ``PeerMismatch``, ``VersionMismatch``, ``LinkTimeout``...) if the handshake fails.
    """
    stream = await connect(url, timeout=timeout)
    session, task = await open_session(stream, keys, Role.INITIATOR, remote=remote, config=config,
                                       router=router, on_open=on_open)
    try:
        await session.wait_open(timeout)
    except BaseException:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, EschatonError):
            await task
        raise
    return session, task


async def serve(url: str, keys: NodeKeys, *,
                config: LinkConfig | None = None,
                router: Router | None = None, on_open: OnOpen | None = None,
                authorize: Authorize | None = None,
                on_session: Callable[[Session], Awaitable[None] | None] | None = None,
                expect: NodeId | None = None, admit: Admit | None = None) -> SessionListener:
    """Accept links on ``url`` (we are the Noise responder).

    ``authorize`` vets each authenticated peer; ``expect`` (for point-to-point serial lines)
    refuses any node but that one. ``on_session`` is called for each new session before it runs.
    ``admit`` is asked before any link state exists for a stream (see ``Admit``); its ticket
    also vets the authenticated peer (after ``authorize``) and is given back when the link opens
    and when it ends.
    """

    sessions: set[Session] = set()
    evictions: set[asyncio.Task[None]] = set()  # strong refs until each close is done
    link_config = _link_config(config, router)  # read once: seals the router before any link

    async def on_stream(stream: FrameStream) -> None:
        ticket = admit(stream) if admit is not None else None
        if admit is not None and ticket is None:
            return  # refused: the transport closes the stream as this returns
        vet = authorize
        if ticket is not None:
            def vet(node_id: NodeId, t: Ticket = ticket) -> bool:
                return (authorize is None or authorize(node_id)) and t.authorize(node_id)
        try:
            link = Link(keys, Role.RESPONDER, now=time.monotonic(),
                        ephemeral=secrets.token_bytes(32), remote=expect,
                        config=link_config, authorize=vet)
            session = Session(link, stream, router=router, on_open=on_open)
            if ticket is not None:
                opened_ticket = ticket

                def release_pending(_f: asyncio.Future[LinkOpen]) -> None:
                    opened_ticket.opened()

                def evict(s: Session = session) -> None:
                    # Called from inside admission (sync): end the session's loop from its side.
                    task = asyncio.get_running_loop().create_task(
                        s.close("evicted: too many handshakes in progress"))
                    evictions.add(task)
                    task.add_done_callback(evictions.discard)

                session.opened.add_done_callback(release_pending)
                ticket.on_evict = evict
            sessions.add(session)
            try:
                if on_session is not None:
                    result = on_session(session)
                    if inspect.isawaitable(result):
                        await result
                await session.run()
            finally:
                sessions.discard(session)
        finally:
            if ticket is not None:
                ticket.closed()

    return SessionListener(await listen(url, on_stream), sessions)


class SessionListener(Listener):
    """A transport listener plus the sessions it accepted; ``close`` ends them all."""

    def __init__(self, inner: Listener, sessions: set[Session]) -> None:
        self.inner = inner
        self.url = inner.url
        self.sessions = sessions
        """Sessions currently running (handshaking or open)."""

    async def close(self) -> None:
        await self.inner.close()
        for session in list(self.sessions):
            await session.close("listener closed")
