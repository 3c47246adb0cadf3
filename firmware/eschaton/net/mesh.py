"""The network half of a node: identity, listeners, discovery, static peers, one session per peer.

The daemon's composition root builds this with ``await NetNode.new(config, router=...)``: every
session hands its messages to that one ``Router`` (``eschaton.net.router``), where the services
registered their rows, and announces the router's feature bits. Rules:
- At most one live session per peer node id. If both sides dial at once, both keep the link
  the smaller node id initiated.
- Static peers are dialled at start and redialled: every ``REDIAL_FAST`` s for the first
  ``REDIAL_FAST_FOR`` s after a link is lost (a peer that went away is most likely restarting:
  a crash, kill -9, an upgrade, and its channels should resume within a fraction of a second of
  it being back), then with exponential backoff capped at ``REDIAL_MAX`` (a peer gone for good
  costs one refused dial a minute).
- Discovered neighbours are dialled only by the side with the smaller node id, so two nodes
  that discover each other build one link, not two.
- Inbound links pass admission control (``core/link/admission.py``): caps on pending handshakes
  (in total and per source address), on established links from peers that are not pinned, a
  handshake deadline, and ``[network] accept = "known"`` to refuse every stranger once Noise
  message 3 reveals its key. Pinned peers are the ``[[network.peers]]``, ids dialled with
  ``connect(..., pin=True)`` (``eschaton peer connect``) and whatever ``is_known`` accepts (the
  daemon: peers we have channels with). Refusals and failed inbound handshakes are counted
  (``stats()``) and logged at most once per interval per kind, never with a traceback.
- ``python -m eschaton.net.mesh --config FILE`` runs just the network part and prints one JSON
  line per event (neighbour found/lost, beacon refused, link open/closed), for tests and field
  debugging; ``--status-every S`` adds a ``status`` event with ``stats()`` every S seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from eschaton.config import NodeConfig, load_config
from eschaton.core.link.admission import Admission, AdmissionLimits, Refusal, Ticket
from eschaton.core.link.beacon import (
    NeighbourChanged,
    NeighbourEvent,
    NeighbourFound,
    NeighbourLost,
)
from eschaton.core.link.errors import NotAuthorised
from eschaton.core.link.identity import NodeId, NodeKeys
from eschaton.core.link.link import LinkClosed, LinkConfig, Role
from eschaton.core.wire.messages import EXTENSIONS, SERVICE_BY_FEATURE
from eschaton.errors import EschatonError
from eschaton.net.discovery import Discovery, advertised_urls
from eschaton.net.identity import load_or_create_identity
from eschaton.net.ratelog import RateLimitedLog
from eschaton.net.reclaim import Reclaimer, freeze_startup_objects
from eschaton.net.router import Router
from eschaton.net.session import Authorize, Session, SessionListener, dial, serve
from eschaton.net.transport import FrameStream

log = logging.getLogger(__name__)

# Redialling a static peer (see the rules). Why fast first: with a ladder of 1, 2, 4 s... the
# channels of a hub that systemd restarts 3 s after a kill -9 sit idle until the next rung after
# it is ready (about 3 s on a PC; longer on a Pi, where start-up takes longer).
REDIAL_FAST = 0.25  # s between dials right after a link is lost
REDIAL_FAST_FOR = 15.0  # s after the loss (or the start) during which dials stay fast
REDIAL_MAX = 60.0  # s: the backoff's cap after that

NodeEvent = dict[str, Any]


class NetNode:
    """Runs listeners, discovery and peer sessions for one node."""

    def __init__(self, config: NodeConfig, keys: NodeKeys, *,
                 router: Router | None = None,
                 authorize: Authorize | None = None,
                 on_event: Callable[[NodeEvent], None] | None = None,
                 link_config: LinkConfig | None = None,
                 is_known: Callable[[NodeId], bool] | None = None) -> None:
        self.config = config
        self.keys = keys
        self.node_id = keys.node_id
        self.sessions: dict[NodeId, Session] = {}
        self.listeners: list[SessionListener] = []
        self.discovery: Discovery | None = None
        self.ble_discovery: Any = None
        """``net.blediscovery.BleDiscovery`` with ``[network.discovery] ble = true`` (imported
        only then: it loads the Bluetooth stack)."""
        self.router = router if router is not None else Router()
        """Where every session's messages go; its services' bits are announced in ``init``."""
        self._authorize = authorize
        self._on_event = on_event
        net = config.network
        self._link_config = link_config or LinkConfig(name=config.node.name,
                                                      handshake_timeout=net.handshake_timeout)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dialling: set[NodeId] = set()
        self._announced: set[Session] = set()
        self.pinned: set[NodeId] = {p.node_id for p in net.peers}
        """Peers admitted whatever the caps and ``accept`` say (grows only by ``connect(pin=True)``)."""
        self._is_known = is_known
        self.admission = Admission(
            AdmissionLimits(max_pending=net.max_pending_handshakes,
                            max_pending_per_source=net.max_pending_per_address,
                            max_links=net.max_links, accept_unknown=net.accept == "any",
                            # A friend's handshake is safe from eviction for a quarter of
                            # the deadline: a few round trips even on a slow mesh.
                            evict_after=net.handshake_timeout / 4),
            pinned=self.is_pinned)
        self.handshake_failures = 0
        """Inbound connections that closed before their peer was authenticated and admitted."""
        self._inbound_log = RateLimitedLog(log)
        self.reclaimer = Reclaimer()
        """Frees what ended connections leave in reference cycles, after each burst of them."""

    @classmethod
    async def new(cls, config: NodeConfig, *, keys: NodeKeys | None = None, **kwargs: Any) -> NetNode:
        """Load (or create) the node key, unless given, and start everything; on failure stop
        what started."""
        if keys is None:
            keys = load_or_create_identity(config.node.datadir)
        node = cls(config, keys, **kwargs)
        try:
            await node.start()
        except BaseException:
            await node.close()
            raise
        return node

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        for url in self.config.network.listen:
            listener = await serve(url, self.keys, config=self._link_config,
                                   router=self.router, on_open=self._on_open,
                                   authorize=self._authorize, on_session=self._track,
                                   admit=self._admit)
            self.listeners.append(listener)
            log.info("listening on %s", listener.url)
        disc = self.config.network.discovery
        if disc.enabled:
            # Bound URLs, so a listen port of 0 is announced as the port the kernel chose.
            urls = list(self.config.network.advertise) or advertised_urls(
                [listener.url for listener in self.listeners], disc.interface)
            self.discovery = Discovery(
                self.keys, port=disc.port, interval=disc.interval, urls=urls,
                on_event=self._on_neighbour, interface=disc.interface,
                broadcast=disc.broadcast, name=self.config.node.name,
                max_age=disc.max_age, expiry=disc.expiry, strict_clock=disc.strict_clock,
                on_refused=lambda source, why: self._emit(
                    {"event": "beacon_refused", "source": source, "reason": why}),
                chain_url=self._served_chain_url())
            await self.discovery.start()
        if disc.ble:
            from eschaton.net.blediscovery import BleDiscovery  # loads bumble: only when asked
            ble = [listener.url for listener in self.listeners if listener.url.startswith("ble://")]
            self.ble_discovery = BleDiscovery(
                self.keys, ble[0], name=self.config.node.name, interval=disc.interval,
                expiry=disc.expiry, on_event=self._on_neighbour,
                wants=lambda n: n not in self.sessions and n not in self._dialling)
            await self.ble_discovery.start()
        for peer in self.config.network.peers:
            self._spawn(self._keep_dialled(peer.node_id, peer.url))
        self._emit({"event": "started", "id": self.node_id.hex(),
                    "listen": [listener.url for listener in self.listeners],
                    "advertise": self.discovery.urls() if self.discovery else []})

    def _served_chain_url(self) -> str | None:
        """The Electrum URL of the chain this node serves to the mesh (``[chain] serve``), for
        its announcements; a wildcard host is resolved by each receiver."""
        serve = self.config.chain.serve
        return f"tcp://{serve[0]}:{serve[1]}" if serve else None

    async def close(self) -> None:
        # Sessions first, while their streams are still open: each tells its peer it is closing
        # (a serial peer has no other way to know). Cancelling the tasks first would close the
        # streams under them.
        for session in list(self.sessions.values()):
            await session.close("node stopping")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, EschatonError):
                await task
        if self.discovery is not None:
            await self.discovery.close()
        if self.ble_discovery is not None:
            await self.ble_discovery.close()
        for listener in self.listeners:
            await listener.close()
        for session in list(self.sessions.values()):
            await session.close("node stopping")
        blehost = sys.modules.get("eschaton.net.blehost")  # loaded only if ble:// was used
        if blehost is not None:
            await blehost.close_all()

    # ---- sessions --------------------------------------------------------------------------------
    def session(self, node_id: NodeId) -> Session | None:
        """The open session to ``node_id``, if any."""
        s = self.sessions.get(node_id)
        return s if s is not None and s.is_open else None

    async def connect(self, node_id: NodeId, url: str, *, pin: bool = False) -> Session:
        """Dial ``node_id`` at ``url`` now (raises the typed transport/link error on failure).
        ``pin``: the operator named this peer, so it may also link to us (``accept = "known"``)
        and is never refused for want of a slot."""
        if pin:
            self.pinned.add(node_id)
        session, task = await dial(url, self.keys, node_id, config=self._link_config,
                                   router=self.router, on_open=self._on_open)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._track(session)  # _on_open already registered it in self.sessions
        return session

    def _on_open(self, session: Session) -> None:
        """Every link, dialled or accepted, as it opens (before the router's services hear)."""
        if session.remote is not None and self.sessions.get(session.remote) is not session:
            self._opened(session)

    # ---- admission -------------------------------------------------------------------------------
    def is_pinned(self, node_id: NodeId) -> bool:
        return node_id in self.pinned or (self._is_known is not None and self._is_known(node_id))

    def _admit(self, stream: FrameStream) -> Ticket | None:
        evicted = self.admission.refused[Refusal.EVICTED]
        got = self.admission.begin(stream.source or stream.peer, time.monotonic())
        if self.admission.refused[Refusal.EVICTED] != evicted:
            self._inbound_log.note("evicted", f"pending handshakes full: {_WHY[Refusal.EVICTED]} "
                                              f"(latest for {stream.source or stream.peer})")
        if isinstance(got, Refusal):
            self.reclaimer.note()  # the transport was built before we refused it
            self._inbound_log.note(got.value, f"refusing inbound connections: {_WHY[got]} "
                                              f"(latest from {stream.source or stream.peer})")
            return None
        return got

    def stats(self) -> dict[str, Any]:
        """Live counts (they return to their baseline when a flood ends) and refusal totals."""
        live = sum(len(listener.sessions) for listener in self.listeners)
        return {**self.admission.stats(), **self.router.stats(), "live_sessions": live,
                "peers": len(self.sessions),
                "handshake_failures": self.handshake_failures, "pinned": len(self.pinned),
                "log_lines": self._inbound_log.lines, "reclaims": self.reclaimer.runs}

    def _track(self, session: Session) -> None:
        def closed(fut: asyncio.Future[LinkClosed]) -> None:
            self.reclaimer.note()
            remote = session.remote
            if remote is not None and self.sessions.get(remote) is session:
                del self.sessions[remote]
            if (remote is None and session.link.role is Role.RESPONDER and not fut.cancelled()):
                ev = fut.result()
                if isinstance(ev.error, NotAuthorised):
                    self._inbound_log.note("not admitted", f"inbound link refused: {ev.reason}")
                else:
                    self.handshake_failures += 1
                    self._inbound_log.note("handshake failed", f"inbound handshake from "
                                           f"{session.stream.source or session.stream.peer} "
                                           f"failed: {ev.reason}")
            # Only links announced as open are announced as closed (a refused duplicate never was).
            if session in self._announced and not fut.cancelled():
                self._announced.discard(session)
                assert remote is not None
                self._emit({"event": "link_closed", "id": remote.hex(),
                            "reason": fut.result().reason})

        session.closed.add_done_callback(closed)

    def _initiator(self, session: Session) -> NodeId:
        assert session.remote is not None
        return self.node_id if session.link.role is Role.INITIATOR else session.remote

    def _opened(self, session: Session) -> None:
        remote = session.remote
        assert remote is not None
        old = self.sessions.get(remote)
        if old is not None and old is not session and old.is_open:
            # Both sides dialled at once. Both keep the link started by the smaller node id,
            # so they agree without talking; the other one is closed.
            smaller = min(self.node_id, remote, key=lambda n: n.raw)
            if self._initiator(old) == smaller and self._initiator(session) != smaller:
                log.info("link to %s via %s: duplicate of an open link, closing the new one",
                         remote.short(), session.stream.peer)
                self._spawn(session.close("duplicate link"))
                return
            log.info("link to %s via %s: duplicate of an open link, closing the old one",
                     remote.short(), old.stream.peer)
            self._spawn(old.close("duplicate link"))
        self.sessions[remote] = session
        self._announced.add(session)
        self._emit({"event": "link_open", "id": remote.hex(), "via": session.stream.peer,
                    "version": session.version, "services": services(session.link.peer_features)})

    async def _keep_dialled(self, node_id: NodeId, url: str) -> None:
        delay, lost, failures = REDIAL_FAST, time.monotonic(), 0
        while True:
            current = self.sessions.get(node_id)
            if current is None or current.closed.done():
                try:
                    session = await self.connect(node_id, url)
                    failures = 0
                    await asyncio.shield(session.closed)
                    delay, lost = REDIAL_FAST, time.monotonic()
                except EschatonError as exc:
                    failures += 1
                    fast = time.monotonic() - lost < REDIAL_FAST_FOR
                    # The fast dials of one outage log once at info; every slow one does.
                    log.log(logging.DEBUG if fast and failures > 1 else logging.INFO,
                            "dial %s at %s failed: %s", node_id.short(), url, exc)
                    delay = REDIAL_FAST if fast else min(max(delay * 2, 1.0), REDIAL_MAX)
            else:
                await asyncio.shield(current.closed)
                delay, lost, failures = REDIAL_FAST, time.monotonic(), 0
            await asyncio.sleep(delay)

    # ---- discovery -------------------------------------------------------------------------------
    def _on_neighbour(self, ev: NeighbourEvent) -> None:
        if isinstance(ev, NeighbourLost):
            self._emit({"event": "neighbour_lost", "id": ev.node_id.hex()})
            return
        kind = "neighbour" if isinstance(ev, NeighbourFound) else "neighbour_changed"
        assert isinstance(ev, NeighbourFound | NeighbourChanged)
        record: dict[str, Any] = {"event": kind, "id": ev.node_id.hex(), "urls": list(ev.urls),
                  "name": ev.name, "source": ev.source}
        if isinstance(ev, NeighbourFound):
            record["clock_offset_s"] = round(ev.clock_offset, 3)
        self._emit(record)
        if self.node_id.raw < ev.node_id.raw and ev.node_id not in self.sessions:
            url = _dialable(ev.urls)
            if url and ev.node_id not in self._dialling:
                self._spawn(self._dial_neighbour(ev.node_id, url))

    async def _dial_neighbour(self, node_id: NodeId, url: str) -> None:
        """Dial a discovered neighbour (the lower id dials). A failed dial is tried again, with
        backoff, for as long as the neighbour stays in the table and unlinked: its later beacons
        raise no event while its addresses stay the same, so nothing else would dial it again.
        (A first dial fails when the mesh has no route yet as the first beacon arrives, or when
        the handshake times out on a busy node.)"""
        self._dialling.add(node_id)
        delay = 1.0
        try:
            while True:
                try:
                    await self.connect(node_id, url)
                    return
                except EschatonError as exc:
                    log.info("neighbour %s at %s: %s (trying again in %.0f s)", node_id.short(), url, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                if self.session(node_id) is not None:
                    return  # it dialled us meanwhile
                urls: tuple[str, ...] = ()
                if self.discovery is not None:
                    urls = self.discovery.table.neighbours().get(node_id, ())
                if (not _dialable(urls) and url.startswith("ble://")
                        and self.ble_discovery is not None and node_id in self.ble_discovery.table):
                    urls = (url,)  # still advertising: dial it where we heard it
                url = _dialable(urls)
                if not url:
                    return  # gone from the tables, or no address we can dial any more
        finally:
            self._dialling.discard(node_id)

    # ---- plumbing --------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, event: NodeEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # supervision boundary: observers must not break the node
                log.exception("node event observer failed")


def _dialable(urls: tuple[str, ...]) -> str:
    """The URL to dial a discovered neighbour at: TCP first (faster), else Bluetooth LE."""
    for scheme in ("tcp://", "ble://"):
        for url in urls:
            if url.startswith(scheme):
                return url
    return ""


_WHY = {
    Refusal.PENDING_FULL: "too many handshakes in progress",
    Refusal.SOURCE_FULL: "too many handshakes in progress from one address",
    Refusal.LINKS_FULL: "too many links",
    Refusal.UNKNOWN_KEY: "unknown key",
    Refusal.EVICTED: "oldest handshake of the busiest address closed to make room",
}


def services(features: frozenset[int]) -> list[str]:
    """Names of the services a set of feature bits announces (unknown bits as ``bit N``;
    extension bits, ``messages.EXTENSIONS``, are left out)."""
    ext = {x.feature for x in EXTENSIONS}  # capabilities inside a service, not services
    return [SERVICE_BY_FEATURE[b].name if b in SERVICE_BY_FEATURE else f"bit {b}"
            for b in sorted(features) if b not in ext]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eschaton.net.mesh",
                                     description="Run the network part of a node, print events.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--status-every", type=float, default=0.0, metavar="S",
                        help="also print a status event (live counts) every S seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr)

    def emit(ev: NodeEvent) -> None:
        print(json.dumps(ev), flush=True)

    async def run() -> None:
        node = await NetNode.new(load_config(args.config), on_event=emit)
        freeze_startup_objects()  # see net/reclaim.py
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.status_every or None)
                if args.status_every:
                    emit({"event": "status", **node.stats()})
        finally:
            await node.close()

    try:
        asyncio.run(run())
    except EschatonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
