"""The DHT service in the node: the ``dht_*`` rows, lookups over the node's links, and the
``dht.put``, ``dht.get``, ``dht.find`` and ``dht.stats`` commands.

How it works (the protocol itself is ``eschaton.core.dht.rpc``, sans-IO):
- Every peer that announces the DHT feature bit goes into the k-buckets when its link opens
  (its node key is authenticated by the link); messages go out over that peer's newest link.
  A contact without a link fails at once (``Rpc.unreachable``): contacts carry no transport
  address yet, so lookups run over the peers this node is linked to (docs/dht.md).
- Timeouts: one task waits for the earliest request deadline (or for a new request, whichever
  comes first, and at most a minute) and feeds ``Rpc.expire``; each pass also drops expired
  records and pushes the held records whose republish time came to the current k closest
  (``maintain``; a store refreshes a record's timers at its receiver, so one holder per record
  republishes per interval).
- The records' chain view: the chain service's height when there is one; transaction proofs
  are refused here until the service holds a synchronous index of header hashes.
- Queries are paid (``eschaton.daemon.dht_market``): the market runs when the node has trade
  channels; its rows ``dht_query``, ``dht_quote``, ``dht_answer`` (and the refusals of its own
  quote requests) go to it, the rest to the lookups.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from eschaton.api.registry import ApiError, Command, CommandTable, Param
from eschaton.config.dht import DhtConfig
from eschaton.core.dht import query as dq
from eschaton.core.dht import records
from eschaton.core.dht.errors import DhtRemoteError
from eschaton.core.dht.pricing import Terms
from eschaton.core.dht.protocol import DEFAULT_PARAMS, DhtNode, Params
from eschaton.core.dht.routing import Contact
from eschaton.core.dht.rpc import Job, Rpc, Send, StoreResult
from eschaton.core.dht.storage import DEFAULT_LIMITS, Limits
from eschaton.core.link.link import LinkClosed
from eschaton.core.wire.codec import Message, make
from eschaton.daemon.dht_dial import Dialer
from eschaton.daemon.dht_market import Market
from eschaton.daemon.service import Health, State
from eschaton.net.router import ServiceRoutes

if TYPE_CHECKING:
    from eschaton.net.session import Session

log = logging.getLogger(__name__)
DHT = CommandTable()
MAINTAIN_EVERY = 60.0
"""Seconds between two passes over the store (expiry, republish) when nothing else wakes it."""
MAX_REPUBLISHING = 16
"""Republish lookups running at once."""
ROWS = ("dht_find_node", "dht_nodes", "dht_find_value", "dht_values", "dht_store",
        "dht_stored", "dht_refused", "dht_query", "dht_quote", "dht_answer", "dht_paid", "dht_addrs")


class DhtService:
    name = "dht"

    def __init__(self, own_key: Callable[[], bytes], *,
                 height: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.monotonic, timeout: float = 5.0,
                 params: Params = DEFAULT_PARAMS, node: Any = None,
                 config: DhtConfig | None = None) -> None:
        """``node``: the node whose channels pay for queries (None: lookups and stores only);
        ``config``: ``[dht]``, which then decides the parameters, bounds and prices."""
        self._own_key = own_key
        self._limits = DEFAULT_LIMITS
        self.config = config or DhtConfig()
        if config is not None:
            params = Params(config.k, config.alpha, config.rate, config.burst)
            self._limits = Limits(config.per_publisher_records, config.per_publisher_kib * 1024,
                                  config.total_kib * 1024)
        self._params = params
        self._node = node
        self.market: Market | None = None
        self.dialer: Dialer | None = None
        self._height = height
        self._clock = clock
        self._timeout = timeout
        self.rpc: Rpc | None = None
        self._links: dict[bytes, list[Session]] = {}
        """Open links per peer, newest last: when two links to one peer cross and one is closed
        as a duplicate, the other one stays usable."""
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._republishing: set[asyncio.Task[None]] = set()

    # --- Service -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.rpc = Rpc(DhtNode(self._own_key(), self._params, self._limits), timeout=self._timeout)
        if self._node is not None and getattr(self._node, "channels", None) is not None:
            c = self.config
            self.market = Market(self, self._node, Terms(c.price_base_sat, c.price_per_result_sat,
                                                         c.price_per_kib_sat),
                                 forward=c.forward, hops=c.forward_hops)
            self.market.start()
        if self._node is not None:
            self.dialer = Dialer(self, self._node, per_minute=self.config.dials_per_minute,
                                 in_flight=self.config.dials_in_flight)
            self.dialer.start()
        self._timer = asyncio.get_running_loop().create_task(self._expire_loop())

    async def stop(self) -> None:
        if self.market is not None:
            await self.market.stop()
        if self.dialer is not None:
            await self.dialer.stop()
        tasks = [t for t in (self._timer, *self._republishing) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def health(self) -> Health:
        if self.rpc is None:
            return Health(State.STOPPED, "not started")
        n = self.rpc.node
        return Health(State.OK, f"{len(n.table)} contacts, {len(n.store)} records held")

    def commands(self) -> Mapping[str, Command]:
        return DHT

    def routes(self) -> ServiceRoutes:
        return ServiceRoutes("dht", {row: self._on_row for row in ROWS},
                             opened=self._opened, closed=self._closed)

    # --- links and messages ------------------------------------------------------------------

    def _core(self) -> Rpc:
        if self.rpc is None:
            raise ApiError("the DHT service is not running")
        return self.rpc

    def ctx(self) -> records.Context:
        return records.Context(self._height(), lambda _h: False)

    def now(self) -> float:
        return self._clock()

    def link(self, peer: bytes) -> Session | None:
        sessions = self._links.get(peer)
        return sessions[-1] if sessions else None

    def linked_keys(self) -> list[bytes]:
        return list(self._links)

    def _opened(self, session: Session) -> None:
        assert session.remote is not None
        self._links.setdefault(session.remote.raw, []).append(session)
        self._core().node.table.observe(Contact(session.remote.raw), self._clock())
        if self.dialer is not None:
            first = [Send(session.remote.raw, m) for m in (self.dialer.hello(),) if m is not None]
            held = self.dialer.opened(session.remote.raw)
            asyncio.get_running_loop().create_task(self._send(first + held))

    def _closed(self, session: Session, event: LinkClosed) -> None:
        assert session.remote is not None
        sessions = self._links.get(session.remote.raw, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._links.pop(session.remote.raw, None)

    async def _on_row(self, session: Session, msg: Message) -> None:
        assert session.remote is not None
        rpc = self._core()
        if self.market is not None and self.market.handles(session.remote.raw, msg):
            await self.market.on_row(session.remote.raw, msg)
            return
        if msg.name == "dht_addrs":
            if self.dialer is not None:
                self.dialer.learn(msg)
            return
        if msg.name in ("dht_query", "dht_quote", "dht_answer", "dht_paid"):
            if msg.name == "dht_query":  # no channels here: nothing can pay for an answer
                await session.send(make("dht_refused", nonce=msg.get_int("nonce"),
                                        reason="this node sells no answers (no trade channels)"))
            return
        await self._send(rpc.on_message(session.remote.raw, msg, self._clock(), self.ctx()))

    async def _send(self, sends: list[Send]) -> None:
        rpc = self._core()
        while sends:
            s = sends.pop(0)
            session = self.link(s.to)
            try:
                if session is None:
                    if self.dialer is not None and self.dialer.hold(s):
                        continue  # sent when the dialed link opens, failed if it does not
                    raise ConnectionError("no link")
                before = self.dialer.annotate(s.msg) if self.dialer is not None else None
                if before is not None:
                    await session.send(before)
                await session.send(s.msg)
            except (ConnectionError, OSError, DhtRemoteError, RuntimeError):
                sends.extend(rpc.unreachable(s, self._clock()))
        self._changed.set()  # the earliest deadline may have moved
        self._wake.set()  # and answers may have finished a lookup or a store

    async def failed_sends(self, sends: list[Send]) -> None:
        """Requests held for a dial that did not open a link: failed now."""
        rpc = self._core()
        out: list[Send] = []
        for s in sends:
            out.extend(rpc.unreachable(s, self._clock()))
        await self._send(out)

    async def _expire_loop(self) -> None:
        rpc = self._core()
        while True:
            deadline = rpc.next_deadline()
            self._changed.clear()
            wait = MAINTAIN_EVERY if deadline is None else max(
                0.0, min(deadline - self._clock(), MAINTAIN_EVERY))
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass
            await self._send(rpc.expire(self._clock()))
            for data in self.maintain(self._clock()):
                self._republish(data)
            self._wake.set()

    def maintain(self, now: float) -> list[bytes]:
        """Drop expired records; returns the held records whose republish time has come (their
        timers re-armed), which the loop pushes to the current k closest."""
        store = self._core().node.store
        store.expire(now)
        return [e.data for e in store.due(now)]

    def _republish(self, data: bytes) -> None:
        if len(self._republishing) >= MAX_REPUBLISHING:
            return  # the next interval takes the rest; nothing is lost before ttl
        task = asyncio.get_running_loop().create_task(self._republish_one(data))
        self._republishing.add(task)
        task.add_done_callback(self._republishing.discard)

    async def _republish_one(self, data: bytes) -> None:
        try:
            await self.publish(data)
        except ApiError as exc:  # e.g. a statement past its validity: it is not pushed on
            log.info("dht republish skipped", extra={"fields": {"reason": str(exc)}})

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._wake.clear()
            await self._wake.wait()

    async def _run(self, job: Job, sends: list[Send]) -> Job:
        await self._send(sends)
        await self._until(lambda: job.done)
        return job

    # --- operations --------------------------------------------------------------------------

    async def publish(self, data: bytes) -> dict[str, Any]:
        """Verify ``data`` and store it at the k closest nodes we can reach (and here)."""
        rpc = self._core()
        try:
            key = records.key_of(records.check(data, records.key_of(records.decode(data)),
                                               self.ctx()))
        except DhtRemoteError as exc:
            raise ApiError(f"record refused: {exc}") from None
        job, sends = rpc.find(key, self._clock())
        await self._run(job, sends)
        results: list[StoreResult] = []
        out = []
        for c in job.lookup.closest():
            res, s = rpc.store(c, key, data, self._clock())
            results.append(res)
            if s is not None:
                out.append(s)
        await self._send(out)
        await self._until(lambda: all(r.ok is not None for r in results))
        me = rpc.node
        try:  # and here: the publisher answers for its own records too
            me.store.put(key, records.record_id(data), data, me.contact.key, self._clock())
        except DhtRemoteError as exc:
            raise ApiError(f"record refused here: {exc}") from None
        return {"key": key.hex(), "stored_at": sorted(r.to.hex() for r in results if r.ok),
                "refused": {r.to.hex(): r.reason for r in results if r.ok is False}}

    async def get(self, key: bytes) -> list[bytes]:
        rpc = self._core()
        here = [e.data for e in rpc.node.store.get(key, self._clock())]
        if here:
            return here
        job, sends = rpc.find(key, self._clock(), want_value=True)
        return (await self._run(job, sends)).values

    async def find(self, target: bytes) -> list[bytes]:
        rpc = self._core()
        job, sends = rpc.find(target, self._clock())
        return [c.key for c in (await self._run(job, sends)).lookup.closest()]

    def stats(self) -> dict[str, Any]:
        rpc = self._core()
        n = rpc.node
        out: dict[str, Any] = {"id": n.id.hex(), "contacts": len(n.table), "linked": len(self._links),
                               "records": len(n.store), "bytes": n.store.total, "unmatched": rpc.unmatched,
                               "bad_records": rpc.bad_records}
        if self.market is not None:
            out["queries"] = self.market.totals()
        if self.dialer is not None:
            out["addresses"] = len(self.dialer.book)
            out["bad_addresses"] = self.dialer.book.bad
            out["dials"] = self.dialer.dials
        return out

    async def query(self, key: bytes, q: bytes, max_price: int, hops: int,
                    qid: bytes | None = None) -> dict[str, Any]:
        if self.market is None:
            raise ApiError("paid queries need trade channels (this node runs none)")
        return await self.market.query(key, q, max_price, hops, qid)


# --- API commands ----------------------------------------------------------------------------


def _hex32(what: str, text: str) -> bytes:
    try:
        b = bytes.fromhex(text)
    except ValueError:
        raise ApiError(f"{what} {text!r} is not hex") from None
    if len(b) != 32:
        raise ApiError(f"{what} must be 32 bytes (64 hex digits)")
    return b


def _describe(data: bytes) -> dict[str, Any]:
    r = records.decode(data)
    out: dict[str, Any] = {"id": records.record_id(data).hex(), "hex": data.hex()}
    if isinstance(r, records.Preimage):
        out.update(kind="preimage", alg=r.alg, digest=r.digest.hex(),
                   data=r.data.decode("utf-8", "replace"))
    else:
        out["kind"] = type(r).__name__.lower()
    return out


@DHT.command("dht.put", "publish a preimage record to the DHT (its key is printed)",
             Param("data", str, "the preimage (text, or hex with --hex)"),
             Param("alg", str, "sha256, sha256d or hash160", required=False, default="sha256"),
             Param("hex", bool, "data is hex", required=False, default=False))
async def dht_put(node: Any, data: str, alg: str, hex: bool) -> dict[str, Any]:
    if alg not in records.ALGS:
        raise ApiError(f"alg must be one of {', '.join(records.ALGS)}")
    try:
        raw = bytes.fromhex(data) if hex else data.encode()
    except ValueError:
        raise ApiError("data is not hex") from None
    out: dict[str, Any] = await node.service("dht").publish(
        records.encode(records.Preimage(alg, raw)))
    out["digest"] = records.digest(alg, raw).hex()
    return out


@DHT.command("dht.get", "records under a DHT key, or a preimage by --alg and digest",
             Param("key", str, "DHT key, or the digest with --alg (64 or 40 hex digits)"),
             Param("alg", str, "look the key up as a digest of this algorithm", required=False,
                   default=""))
async def dht_get(node: Any, key: str, alg: str) -> dict[str, Any]:
    if alg:
        if alg not in records.ALGS:
            raise ApiError(f"alg must be one of {', '.join(records.ALGS)}")
        try:
            dig = bytes.fromhex(key)
        except ValueError:
            raise ApiError(f"digest {key!r} is not hex") from None
        k = records.preimage_key(alg, dig)
    else:
        k = _hex32("key", key)
    found = await node.service("dht").get(k)
    return {"key": k.hex(), "records": [_describe(d) for d in found]}


@DHT.command("dht.find", "the closest nodes to a DHT id that this node can reach",
             Param("target", str, "DHT id (64 hex digits) or any text to hash"))
async def dht_find(node: Any, target: str) -> dict[str, Any]:
    try:
        t = _hex32("target", target)
    except ApiError:
        t = hashlib.sha256(target.encode()).digest()
    keys = await node.service("dht").find(t)
    return {"target": t.hex(), "nodes": [k.hex() for k in keys]}


@DHT.command("dht.stats", "the DHT's contacts, records held and refusals")
async def dht_stats(node: Any) -> dict[str, Any]:
    stats: dict[str, Any] = node.service("dht").stats()
    return stats


@DHT.command("dht.query", "a paid query over the records under a DHT key (the cheapest answer of "
             "the neighbours, paid through a trade channel)",
             Param("key", str, "DHT key (64 hex digits), or a digest with --alg"),
             Param("query", str, "the query as JSON, e.g. [\"has\", [\"data\"]] (docs/dht.md)"),
             Param("max_price", int, "the most to pay, in satoshis ([dht] max_price_sat if not given)",
                   required=False, default=-1),
             Param("alg", str, "the key is a digest of this algorithm", required=False, default=""),
             Param("hops", int, "how many times the query may be forwarded (-1: [dht] forward_hops)",
                   required=False, default=-1),
             Param("id", str, "query id (32 hex digits) to retry a query without paying twice",
                   required=False, default=""))
async def dht_query(node: Any, key: str, query: str, max_price: int, alg: str, hops: int,
                    id: str) -> dict[str, Any]:
    svc: DhtService = node.service("dht")
    k = _key(key, alg)
    q = _query_bytes(query)
    if max_price < -1:
        raise ApiError("max_price must be a number of satoshis (0 or more)")
    if hops < -1 or hops > 8:
        raise ApiError("hops must be 0..8")
    qid = None
    if id:
        try:
            qid = bytes.fromhex(id)
        except ValueError:
            raise ApiError(f"id {id!r} is not hex") from None
        if len(qid) != 16:
            raise ApiError("id must be 16 bytes (32 hex digits)")
    out = await svc.query(k, q, svc.config.max_price_sat if max_price < 0 else max_price,
                          svc.config.forward_hops if hops < 0 else hops, qid)
    out["records"] = [_describe(d) for d in out["records"]]
    return out


def _key(key: str, alg: str) -> bytes:
    if not alg:
        return _hex32("key", key)
    if alg not in records.ALGS:
        raise ApiError(f"alg must be one of {', '.join(records.ALGS)}")
    try:
        dig = bytes.fromhex(key)
    except ValueError:
        raise ApiError(f"digest {key!r} is not hex") from None
    return records.preimage_key(alg, dig)


def _query_bytes(text: str) -> bytes:
    """The query's wire form from its JSON: strings are UTF-8 bytes, ``{"hex": ...}`` raw bytes."""
    import json

    from eschaton.core.wire import bencode

    def conv(v: Any) -> bencode.EValue:
        if isinstance(v, bool) or v is None or isinstance(v, float):
            raise ApiError("query: only lists, strings, integers and {\"hex\": ...} are allowed")
        if isinstance(v, str):
            return v.encode()
        if isinstance(v, int):
            return v
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict) and set(v) == {"hex"} and isinstance(v["hex"], str):
            try:
                return bytes.fromhex(v["hex"])
            except ValueError:
                raise ApiError("query: a {\"hex\": ...} value is not hex") from None
        raise ApiError("query: only lists, strings, integers and {\"hex\": ...} are allowed")
    if len(text) > 16_384:
        raise ApiError("query is longer than 16 KiB")
    try:
        parsed = json.loads(text)
        data = bencode.encode(conv(parsed))
    except json.JSONDecodeError as exc:
        raise ApiError(f"query is not JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ApiError("query is nested too deeply") from None
    try:
        dq.decode(data)
    except DhtRemoteError as exc:
        raise ApiError(f"query refused: {exc}") from None
    return data
