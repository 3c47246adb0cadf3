"""The DHT's wire protocol as a sans-IO state machine: messages in, messages to send out.

Rules / theory of operation:
- ``Rpc`` wraps one ``DhtNode``. Requests from peers (``dht_find_node``, ``dht_find_value``,
  ``dht_store``) are answered at once with one message (``dht_nodes``, ``dht_values``,
  ``dht_stored``, or ``dht_refused`` with a one-line reason); the sender is the node key of the
  link the message came over, which the adapter passes in.
- Our own requests carry a fresh nonce and wait in ``_pending`` with a deadline. An answer is
  matched by (peer, nonce); one nobody waits for (late, repeated, from another peer) is counted
  in ``unmatched`` and dropped. ``expire(now)`` turns overdue requests into timeouts.
- A ``Job`` is one lookup driven over the wire: its queries go out as messages, answers and
  timeouts go back into its ``Lookup``, and the records a find-value gets are re-verified
  (``records.check``) before they count: a peer's bad record is the same as no answer.
- ``on_message`` never raises on a peer's input: everything it decides is a message to send.
- Nothing here sends, sleeps or reads a clock; ``now`` and the chain view ``ctx`` are inputs and
  ``next_deadline`` says when to call ``expire``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eschaton.core.dht import records
from eschaton.core.dht.errors import DhtRemoteError
from eschaton.core.dht.lookup import Lookup
from eschaton.core.dht.protocol import DhtNode
from eschaton.core.dht.routing import Contact
from eschaton.core.wire.codec import Message, make

MAX_VALUES = 3  # records per dht_values (the row's bound): 3 x 16 KiB fit one Noise message


@dataclass(frozen=True, slots=True)
class Send:
    """Action: send ``msg`` to the node whose key is ``to``."""

    to: bytes
    msg: Message


@dataclass(slots=True)
class Job:
    """A lookup driven over the wire, and what it found."""

    lookup: Lookup
    values: list[bytes] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.lookup.done


@dataclass(slots=True)
class StoreResult:
    """The outcome of a ``dht_store`` we sent: ``ok`` None while waiting."""

    to: bytes
    ok: bool | None = None
    reason: str = ""


@dataclass(slots=True)
class _Pending:
    peer: Contact
    deadline: float
    job: Job | None = None
    store: StoreResult | None = None


class Rpc:
    def __init__(self, node: DhtNode, *, timeout: float = 5.0, max_pending: int = 1024) -> None:
        self.node = node
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: dict[tuple[bytes, int], _Pending] = {}
        self._next = 1
        self.unmatched = 0
        """Answers dropped because no request of ours matched them."""
        self.bad_records = 0
        """Records in answers that did not verify."""

    # --- our requests -------------------------------------------------------------------------

    def _request(self, p: _Pending, name: str, now: float, **fields: object) -> Send | None:
        if len(self._pending) >= self.max_pending:
            return None  # the caller sees it as a timeout at once
        nonce, self._next = self._next, self._next + 1
        p.deadline = now + self.timeout
        self._pending[(p.peer.key, nonce)] = p
        return Send(p.peer.key, make(name, nonce=nonce, **fields))

    def find(self, target: bytes, now: float, *, want_value: bool = False) -> tuple[Job, list[Send]]:
        """Start a lookup; returns the job and the first queries to send."""
        job = Job(self.node.lookup(target, want_value))
        return job, self._advance(job, now)

    def _advance(self, job: Job, now: float) -> list[Send]:
        out: list[Send] = []
        while True:
            acts = job.lookup.actions()
            if not acts:
                return out
            for a in acts:
                p = _Pending(a.to, 0.0, job=job)
                if a.want_value:
                    s = self._request(p, "dht_find_value", now, key=a.target)
                else:
                    s = self._request(p, "dht_find_node", now, target=a.target)
                if s is None:
                    job.lookup.on_timeout(a.to)
                else:
                    out.append(s)
            if out:
                return out

    def store(self, to: Contact, key: bytes, data: bytes,
              now: float) -> tuple[StoreResult, Send | None]:
        """Ask ``to`` to hold ``data`` under ``key`` (no message: too many requests wait)."""
        res = StoreResult(to.key)
        s = self._request(_Pending(to, 0.0, store=res), "dht_store", now, key=key, record=data)
        if s is None:
            res.ok, res.reason = False, "too many requests waiting"
        return res, s

    def expire(self, now: float) -> list[Send]:
        """Time out overdue requests; returns the queries lookups send in their place."""
        out: list[Send] = []
        for k, p in list(self._pending.items()):
            if p.deadline <= now:
                del self._pending[k]
                out.extend(self._failed(p, "no answer", now))
        return out

    def unreachable(self, send: Send, now: float) -> list[Send]:
        """``send`` could not leave (no link to its peer): a failure now, not at its deadline."""
        p = self._pending.pop((send.to, send.msg.get_int("nonce")), None)
        return [] if p is None else self._failed(p, "peer not reachable", now)

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def _failed(self, p: _Pending, reason: str, now: float) -> list[Send]:
        self.node.table.failed(p.peer)
        if p.store is not None:
            p.store.ok, p.store.reason = False, reason
            return []
        assert p.job is not None
        p.job.lookup.on_timeout(p.peer)
        return self._advance(p.job, now)

    # --- messages from peers ------------------------------------------------------------------

    def on_message(self, frm: bytes, msg: Message, now: float,
                   ctx: records.Context) -> list[Send]:
        """Handle one decoded DHT message from the peer whose node key is ``frm``."""
        peer = Contact(frm)
        nonce = msg.get_int("nonce")
        name = msg.name
        try:
            if name == "dht_find_node":
                nodes = self.node.on_find_node(peer, msg.get_bytes("target"), now)
                return [Send(frm, make("dht_nodes", nonce=nonce, nodes=[c.key for c in nodes]))]
            if name == "dht_find_value":
                data, nodes = self.node.on_find_value(peer, msg.get_bytes("key"), now, ctx)
                return [Send(frm, make("dht_values", nonce=nonce, records=data[:MAX_VALUES],
                                       nodes=[c.key for c in nodes]))]
            if name == "dht_store":
                self.node.on_store(peer, msg.get_bytes("key"), msg.get_bytes("record"), now, ctx)
                return [Send(frm, make("dht_stored", nonce=nonce))]
        except DhtRemoteError as exc:
            return [Send(frm, make("dht_refused", nonce=nonce, reason=str(exc)[:256]))]
        p = self._pending.pop((frm, nonce), None)
        if p is None:
            self.unmatched += 1
            return []
        if name == "dht_refused":
            return self._failed(p, msg.get_text("reason"), now)
        if p.store is not None:
            if name != "dht_stored":
                return self._failed(p, f"answered {name} to a store", now)
            self.node.table.observe(peer, now)
            p.store.ok = True
            return []
        assert p.job is not None
        lk = p.job.lookup
        if name not in ("dht_nodes", "dht_values") or (name == "dht_values") != lk.want_value:
            return self._failed(p, f"answered {name} to a lookup", now)
        self.node.table.observe(peer, now)
        good = []
        if name == "dht_values":
            for d in _blobs(msg, "records"):
                try:
                    records.check(d, lk.target, ctx)
                    good.append(d)
                except DhtRemoteError:
                    self.bad_records += 1
        contacts = [Contact(k) for k in _blobs(msg, "nodes")]
        if good and not p.job.values:
            p.job.values = good
        lk.on_response(p.peer, contacts, has_value=bool(good))
        return self._advance(p.job, now)


def _blobs(msg: Message, key: str) -> list[bytes]:
    """A list-of-bytes field (the codec checked its shape against the table)."""
    v = msg[key]
    return [b for b in v if isinstance(b, bytes)] if isinstance(v, list) else []
