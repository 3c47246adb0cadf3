"""What the channel store writes per payment and how far it grows: a hub runs for months on an
SD card (docs/channels.md, "Store writes"). Two real stores (SQLite, WAL, fsync) behind two
endpoints, paying 1 sat both ways with payment records as the node writes them."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from eschaton.channel.driver import ChannelEndpoint
from eschaton.channel.payments import PaymentRecord, PaymentState
from eschaton.channel.store import ChannelStore
from tests.unit.channel.pair import Pair, opened, params

# WAL bytes both stores append per payment, two payments per group commit, both ways. A
# commit writes every page it changes as a frame of page size + 24 bytes. Measured: 4 KiB
# pages with the payment table indexed by state and the static part in the channel's row,
# 14.0 KB (3.4 frames of 4,120 B); 1 KiB pages, the static part apart and no state index,
# 5.1 KB (4.9 frames of 1,048 B). The bound sits between with room for the payment id index
# (random ids land on random leaf pages) to deepen over a longer run.
WAL_BYTES_PER_PAYMENT = 8_000

# Resident memory of a fresh process per 1,000 payments (both stores), after a warm-up of 1,000.
# SQLite's page cache at its default size (2,000 KiB a connection) grew with the payment records
# until full: 93 KiB per 1,000 over these 5,000 (240 over later thousands in a longer run). With
# the store's cache at CACHE_KIB: 0 (three runs). What Python keeps per payment (the endpoint's
# ~10 B, tests/integration/channel/test_memory.py) is 10 KiB per 1,000: the bound leaves room for
# it and sits at half the old growth.
RSS_KIB_PER_1000 = 48


class _Two:
    """Two endpoints on one channel, each with its store; payments recorded as the node does
    (the record in the commit of its version, completion as bookkeeping folded into the next)."""

    def __init__(self, d: Path, pair: Pair, fsync: bool = True) -> None:
        self.pr = pair
        self.cid = pair.a.ch.channel_id
        self.stores = {n: ChannelStore(d / f"{n}.db", fsync=fsync) for n in "ab"}
        self.eps: dict[str, ChannelEndpoint] = {}
        for n in "ab":
            side = pair.side(n)
            ep = ChannelEndpoint(self.stores[n], lambda _c, s=side: s.priv,
                                 lambda m, n=n: pair.queue.append((n, m)))
            ep.channels[self.cid] = side.ch
            self.eps[n] = ep
        self.pending: dict[str, list[PaymentRecord]] = {"a": [], "b": []}
        self.n = 0

    def _deliver(self) -> None:
        while self.pr.queue:
            src, m = self.pr.queue.popleft()
            dst = self.eps["b" if src == "a" else "a"]
            with dst.batch():
                dst.receive(m, self.pr.height)

    def pay(self, payments: int, per_commit: int = 2, run: int = 10) -> None:
        for i in range(payments // per_commit):
            name = "a" if (i // run) % 2 == 0 else "b"
            ep = self.eps[name]
            ch = ep.channels[self.cid]
            if not ch.have_turn:
                ep.execute(ch, ch.request_turn())
                self._deliver()
            with ep.batch():
                for _ in range(per_commit):
                    self.n += 1
                    now = time.time()
                    rec = PaymentRecord(f"{name}-{os.urandom(8).hex()}", self.cid, 1, PaymentState.PENDING, 0, now, now)
                    ep.call(self.cid, "pay", 1, self.pr.height, payment=rec)
                    self.pending[name].append(PaymentRecord(rec.id, self.cid, 1, PaymentState.PENDING,
                                                            ch.pending.number if ch.pending else 0, now, now))
            self._deliver()
            done = [r for r in self.pending[name] if ch.current.number >= r.number]
            self.pending[name] = [r for r in self.pending[name] if ch.current.number < r.number]
            self.stores[name].record_payments([r.to(PaymentState.COMPLETE, time.time()) for r in done])

    def close(self) -> None:
        for st in self.stores.values():
            st.close()


def _pair() -> Pair:
    pr = opened(p=params(lifetime=5_000, locktime_step=1))
    pr.pay("a", 200_000)  # both sides can pay (and pay a direction switch's fee step)
    return pr


def _wal_frames(path: Path) -> tuple[int, int]:
    """(frames, page size) of the WAL beside ``path``."""
    raw = path.with_name(path.name + "-wal").read_bytes()
    page = struct.unpack(">I", raw[8:12])[0]
    return (len(raw) - 32) // (page + 24), page


def test_wal_bytes_per_payment_stay_under_a_bound(tmp_path: Path) -> None:
    two = _Two(tmp_path, _pair())
    try:
        two.pay(200)  # warm up: tables and indexes past their first pages
        for st in two.stores.values():
            st.flush()
            st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            st.db.execute("PRAGMA wal_autocheckpoint = 0")  # every frame of the run stays countable
        paid = 400
        two.pay(paid)
        frames = {n: _wal_frames(st.path) for n, st in two.stores.items()}
        wal = sum(f * (page + 24) for f, page in frames.values())
        print(f"{wal / paid:.0f} WAL bytes per payment (both sides): {frames}")
        assert wal / paid <= WAL_BYTES_PER_PAYMENT, f"{wal / paid:.0f} WAL bytes per payment, frames {frames}"
    finally:
        two.close()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def rss_growth_per_1000(d: str) -> float:
    """RSS growth of this process per 1,000 payments after a warm-up (run in a fresh
    interpreter: pytest's own freed heap would hide a few MB of growth)."""
    two = _Two(Path(d), _pair(), fsync=False)  # the page cache is the same without fsync, 20x faster
    try:
        two.pay(1_000)
        before = _rss_kib()
        paid = 5_000
        two.pay(paid)
        return (_rss_kib() - before) * 1000 / paid
    finally:
        two.close()


def test_the_store_page_cache_does_not_grow_with_the_payments(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "firmware"), str(root)])}
    out = subprocess.run([sys.executable, "-c", "import sys; from tests.integration.channel.test_store_wear import "
                          "rss_growth_per_1000 as f; print(f(sys.argv[1]))", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    grown = float(out.stdout.split()[-1])
    print(f"RSS {grown:.0f} KiB per 1,000 payments")
    assert grown < RSS_KIB_PER_1000, f"RSS grew {grown:.0f} KiB per 1,000 payments"


def test_pruned_payment_records_keep_the_store_flat(tmp_path: Path) -> None:
    """Records beyond the newest N of the store are pruned; the pages they free take the next
    ones, so the file stops growing; each channel remembers when its newest pruned one was made."""
    two = _Two(tmp_path, _pair())
    st = two.stores["a"]
    sizes = []
    try:
        for _ in range(7):
            two.pay(200)
            st.flush()
            st.prune_payments(older_than=0.0, keep=150)
            st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append(st.path.stat().st_size)
        kept = st.db.execute("SELECT COUNT(*), MIN(created_at) FROM payments").fetchone()
        assert kept[0] <= 150 + len(two.pending["a"]), kept
        assert 0 < st.pruned_before(two.cid) <= kept[1]
        # The count never takes a record younger than ``count_before``: with it a day back,
        # nothing made just now goes, however far past the cap the store is.
        two.pay(200)
        st.flush()
        before = st.db.execute("SELECT COUNT(*) FROM payments").fetchone()[0]
        assert before > 150
        assert st.prune_payments(older_than=0.0, keep=10, count_before=time.time() - 86_400) == 0
        assert st.db.execute("SELECT COUNT(*) FROM payments").fetchone()[0] == before
        # A record is pruned by age too, and a PENDING one never.
        st.prune_payments(older_than=time.time() + 1, keep=10**6)
        assert [r.state for r in st.db.execute("SELECT state FROM payments")] == [("PENDING",)] * len(two.pending["a"])
        print(f"channels.db after each round: {sizes}")
        # Flat, not frozen: ids are random, so the id index splits pages where they land and a
        # page or two of slack stays; unpruned, each round would add what the first one did.
        assert sizes[-1] - sizes[2] <= (sizes[1] - sizes[0]) / 4, f"the store grew after pruning: {sizes}"
    finally:
        two.close()
