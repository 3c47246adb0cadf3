"""Durable cumulative byte totals of bandwidth clients, built on the kernel's nft counters.

Rules / theory of operation:
- The kernel counts (``meter_drivers.nft_bandwidth``). We keep, per client, a cumulative total
  ``T`` in a ``TotalsJournal`` and a **base** ``B`` with the invariant ``T = B + K``, where ``K``
  is the byte count of the kernel counter currently in use. While that counter lives, ``B`` is
  constant and every poll commits just ``T`` (one journal record per active client).
- Journal keys: ``<name>`` (T), ``<name>.base`` (B) and ``<name>.cut`` (1 while cut). A dot
  cannot occur in a client name, so the keys never collide. (Storing ``B`` rather than the raw
  kernel value ``K_then = T - B`` is the same information, but it changes only when the counter
  is replaced, so a power cut that tears a batch can never leave a new ``T`` beside an old
  ``K_then``, which would double-count on the next open.)
- Opening (and any poll that finds the counter replaced) decides, per client, with the durable
  ``T_c``, ``B_c`` (absent: 0) and the kernel's ``K_n`` now, where ``K_c = T_c - B_c``:
    * same counter (``ensure()`` did not create it, and ``K_n >= K_c``): ``T = B_c + K_n``.
      The bytes the kernel counted while no meter was running are counted, exactly once;
    * new counter (created by ``ensure()``: reboot, ``nft flush ruleset``, table removed; or
      ``K_n < K_c``): ``B = T_c`` and ``T = T_c + K_n`` (the bytes since it was made). The new
      ``B`` is committed ALONE and first: a crash before it leaves the old state, a crash after
      it leaves ``K_c = 0``, both of which the rule above reads correctly.
  A poll that sees a counter replaced first commits the total it last computed (still valid for
  the old counter), then the new base, in two separate commits for the same reason. Bytes the
  old counter saw after our last read are lost: the buyer's favour.
- Totals never go backwards and no byte is counted twice. A crash between the kernel's count and
  our commit loses at most the uncommitted bytes: ``total()`` is what the journal holds, and the
  seller bills only that, so no invoice is ever ahead of the meter.
- A journal that has never seen a client (no ``.base``) adopts the kernel's whole count.
- ``add_listener(fn)``: ``fn()`` is called after every poll (in the polling thread), so that
  consumers read the totals when they changed instead of running a ticker of their own. One
  that raises is logged and skipped.
- Cuts fail closed: ``cut`` takes effect in the kernel and then is made durable; ``restore`` is
  made durable and then lifted. Whenever the table is (re)built, every client the journal says is
  cut is cut again, and ``close()`` leaves the table in place, so a cut client stays cut while the
  node is down or restarting.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from eschaton.metering.journal import TotalsJournal
from meter_drivers.nft_bandwidth import BandwidthClient, NftBandwidth, NftConfigError, NftError

log = logging.getLogger("eschaton.metering.bandwidth")

BASE = ".base"
CUT = ".cut"


class BandwidthMeters:
    """Per-client cumulative bytes, durable in a journal; cut and restore clients."""

    def __init__(self, clients: Sequence[BandwidthClient], journal_dir: str | Path, *,
                 table: str = "eschaton_bw", nft: Sequence[str] = ("nft",),
                 commit_interval_s: float = 1.0, guard: Sequence[str] = ()) -> None:
        # guard: interfaces on which only metered, uncut clients are forwarded (fail closed;
        # see meter_drivers.nft_bandwidth).
        self.nft = NftBandwidth(clients, table=table, nft=nft, guard=guard)  # validates before touching disk
        self.names: tuple[str, ...] = self.nft.names
        self._lock = threading.Lock()
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self.journal = TotalsJournal(journal_dir, interval_s=commit_interval_s)
        try:
            durable = self.journal.totals()
            self._total = {n: durable.get(n, 0) for n in self.names}
            self._base = {n: durable.get(n + BASE, 0) for n in self.names}
            self._cut = {n: 1 if durable.get(n + CUT, 0) else 0 for n in self.names}
            self._kernel = {n: self._total[n] - self._base[n] for n in self.names}
            counters = self.nft.ensure()
            self._reapply_cuts()
            self._adopt(counters, self.nft.created)
        except BaseException:
            self.journal.close()
            raise

    # -- internals (call with the lock held, or from __init__) -------------------------------
    def _values(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.names:
            out[n] = self._total[n]
            out[n + BASE] = self._base[n]
            out[n + CUT] = self._cut[n]
        return out

    def _reapply_cuts(self) -> None:
        for n in self.names:
            if self._cut[n]:
                self.nft.cut(n)

    def _adopt(self, counters: dict[str, int], created: frozenset[str]) -> None:
        """Take the kernel's counts ``counters``; rebase clients whose counter was replaced."""
        replaced = [n for n in self.names
                    if n in created or self._kernel[n] < 0 or counters[n] < self._kernel[n]]
        if replaced:
            # Step 1: the totals we computed against the old counters are durable ...
            self.journal.maybe_commit(self._values(), force=True)
            # ... step 2: only then the new bases, alone in their own commit (see the rules).
            for n in replaced:
                self._base[n] = self._total[n]
            self.journal.maybe_commit({n + BASE: self._base[n] for n in replaced}, force=True)
        for n in self.names:
            self._kernel[n] = counters[n]
            self._total[n] = max(self._total[n], self._base[n] + counters[n])
        self.journal.maybe_commit(self._values(), force=True)

    def _check(self, name: str) -> None:
        if name not in self._total:
            raise NftConfigError(name, "no such bandwidth client")

    # -- API -----------------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each poll (in the polling thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def poll(self, now: float | None = None) -> dict[str, int]:
        """Read the counters, update the totals, group-commit; returns the durable totals."""
        totals = self._poll(now)
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # supervision boundary: a broken listener must not stop metering
                log.exception("bandwidth listener %r failed", listener)
        return totals

    def _poll(self, now: float | None) -> dict[str, int]:
        with self._lock:
            if self._closed:
                raise NftError(self.nft.table, "bandwidth meters are closed")
            try:
                counters = self.nft.read()
                created: frozenset[str] = frozenset()
            except NftError:
                # The table or a counter is gone (nft flush ruleset, a reboot of the firewall):
                # rebuild it, cuts included. If nft itself is unusable this raises again.
                counters = self.nft.ensure()
                created = self.nft.created
                self._reapply_cuts()
            if created or any(counters[n] < self._kernel[n] for n in self.names):
                self._adopt(counters, created)
            else:
                for n in self.names:
                    self._kernel[n] = counters[n]
                    self._total[n] = self._base[n] + counters[n]
                self.journal.maybe_commit(self._values(), now)
            return {n: self.journal.total(n) for n in self.names}

    def total(self, name: str) -> int:
        """The durable cumulative bytes of ``name`` (what the journal committed)."""
        self._check(name)
        return self.journal.total(name)

    def cut(self, name: str) -> None:
        """Drop the client's traffic now, and remember it durably (idempotent)."""
        with self._lock:
            self._check(name)
            self.nft.cut(name)
            self._cut[name] = 1
            self.journal.maybe_commit(self._values(), force=True)

    def restore(self, name: str) -> None:
        """Durably forget the cut, then let the client's traffic through (idempotent)."""
        with self._lock:
            self._check(name)
            self._cut[name] = 0
            self.journal.maybe_commit(self._values(), force=True)
            self.nft.restore(name)

    def is_cut(self, name: str) -> bool:
        """Whether the kernel drops the client's traffic now."""
        self._check(name)
        return self.nft.is_cut(name)

    def close(self) -> None:
        """Final commit; the nft table stays (cut clients stay cut while the node is down)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.journal.maybe_commit(self._values(), force=True)
            finally:
                self.journal.close()

    def __enter__(self) -> BandwidthMeters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
