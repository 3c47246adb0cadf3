"""Soak: one hub and ten neighbours paying each other 1 sat at a time, both ways at once, as a
village gateway is loaded (``tests/integration/node/hub.py`` builds and measures it).

What a hub that runs for months on an SD card needs, checked over a bounded run:
- memory: the hub's RSS does not climb with the number of payments;
- chain: payments make no chain-server queries (only blocks and the watcher's slow timer do);
- logs: per-payment events are summarised, so the hub's log does not grow with payments;
- recovery: after the hub is killed with SIGKILL and restarted, no channel waits more than 2 s
  for its next payment once the hub is ready, and every channel reconciles exactly.
Two more checks are on two-way trade itself (a re-anchor that does not stop payments, fees small
against the value moved); they are written against the behaviour the design asks for.

The numbers these tests bound are reported at length by ``bench/bench_soak.py``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from eschaton.api.client import call as api_call
from eschaton.api.client import call_async
from eschaton.errors import EschatonError
from tests.integration.node.harness import Cluster, NodeProc, mirrored, poll
from tests.integration.node.hub import Balance, Drive, Hub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NEIGHBOURS = 10
WARMUP = 250  # payments per channel before memory is first read (2,500 on the hub)
MEASURED = 250  # payments per channel between the two reads (2,500 on the hub)
AROUND_KILL = 100  # payments per channel while the hub is killed and restarted

# RSS growth per 1,000 payments on the hub after the warm-up. Measured on this code with 10
# neighbours, per 1,000 payments in a row: 784, 272, 176, 144, 120, 76, 80, 64 KiB, falling at
# first, then about 100 KiB per 1,000 for as long as bench/bench_soak.py ran (11,000 payments;
# channels.db grows some 60 B per payment with the payment records meanwhile). This test's
# window (2,500 to 5,000) measured 128 and 152. The endpoint itself retains ~10 B per payment
# (tests/integration/channel/test_memory.py). A list keeping each channel notification (the
# old leak, put back for a run) measured 422 in the same window. With the channel store's
# SQLite page cache bounded (256 KiB; its 2,000 KiB default filled as the payment records grew
# the file) the window measured 93, 93 and 99. The bound is about two and a half times that: the
# rest is outside the Python heap (tracemalloc: ~5 B per payment) and still settling, and three
# runs on a shared machine are not a distribution (bench_soak over 16,000 payments: the
# hub settles in the first 3,000, then stays flat). The page cache alone is bounded tightly by
# tests/integration/channel/test_store_wear.py; this bound still catches the old leak (422).
RSS_KIB_PER_1000 = 240

# Log bytes at default verbosity. Per-payment events are summarised in one info line per node
# per minute (~200 B); a hub at 300 payments/s may write about 1 MB/h, about one byte per
# payment. The neighbours' summary lines are a cost per node and minute, not per payment: each
# may write one line (with room: SUMMARY_LINE) per minute started in the window.
HUB_LOG_BYTES_PER_PAYMENT = 1.0
SUMMARY_LINE = 300

# Chain-server queries: one per status read (the measurement itself) plus the watcher's periodic
# look (a tip query and two per channel, every 60 s: at most twice in the window), whatever the
# number of payments. A query per payment or per channel message would be thousands here.
WATCHER_PASS = 1 + 2 * NEIGHBOURS
HUB_QUERIES = 1 + 2 * WATCHER_PASS
SPOKE_QUERIES = NEIGHBOURS * (1 + 2 * 3)

STALL_LIMIT = 2.0  # s: the longest a channel may wait for its next payment once the hub is ready

# Two-way trade: fees paid (what the two parties end with on chain at close, against what they
# held before the flow) must stay at or under this fraction of the value the payments moved.
FEE_FRACTION = 0.01


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    cluster = Cluster(tmp_path_factory.mktemp("soak"))
    try:
        # Step 1 so that the direction switches of these runs stay far from the re-anchor
        # budget: the re-anchor under two-way flow has its own test below.
        yield Hub.start(cluster, NEIGHBOURS, lifetime=1008, step=1)
    finally:
        cluster.close()


def _reconciles(hub: Hub, before: list[Balance], d: Drive) -> None:
    """Every channel: both sides agree, nothing is created or lost, and each side's balance plus
    its share of the fee moved by exactly what it received less what it paid."""
    after = hub.balances()
    for k, (b0, b1) in enumerate(zip(before, after, strict=True)):
        assert b0.hub + b0.spoke + b0.fee == b1.hub + b1.spoke + b1.fee, (k, b0, b1)
        net = d.paid_by_spoke[k] - d.paid_by_hub[k]  # to the hub
        assert (b1.hub + b1.hub_fee_paid) - (b0.hub + b0.hub_fee_paid) == net, (k, b0, b1, net)
        assert (b1.spoke + b1.spoke_fee_paid) - (b0.spoke + b0.spoke_fee_paid) == -net, (k, b0, b1, net)


def test_hub_memory_chain_queries_and_logs_stay_flat(hub: Hub) -> None:
    hub.drive(WARMUP)
    before, balances = hub.sample(), hub.balances()
    d = hub.drive(MEASURED)
    after = hub.sample()
    assert d.payments == NEIGHBOURS * MEASURED
    _reconciles(hub, balances, d)

    per_1000 = (after.rss_kib - before.rss_kib) * 1000 / d.payments
    print(f"hub RSS {per_1000:.0f} KiB per 1,000 payments; log bytes per payment: hub "
          f"{(after.hub_log_bytes - before.hub_log_bytes) / d.payments:.2f}, all "
          f"{(after.log_bytes - before.log_bytes) / d.payments:.2f}; chain queries: hub "
          f"{after.hub_queries - before.hub_queries}, neighbours {after.spoke_queries - before.spoke_queries}")
    assert per_1000 < RSS_KIB_PER_1000, f"hub RSS {before.rss_kib} -> {after.rss_kib} KiB over {d.payments} payments"
    hub_logs = (after.hub_log_bytes - before.hub_log_bytes) / d.payments
    all_logs = (after.log_bytes - before.log_bytes) / d.payments
    assert hub_logs <= HUB_LOG_BYTES_PER_PAYMENT, f"hub log bytes per payment: {hub_logs:.2f}: {hub.hub.logs[-5:]}"
    minutes = 1 + int(after.at - before.at) // 60
    allowed = d.payments * HUB_LOG_BYTES_PER_PAYMENT + (NEIGHBOURS + 1) * SUMMARY_LINE * minutes
    assert after.log_bytes - before.log_bytes <= allowed, f"log bytes per payment, all nodes: {all_logs:.2f}"
    hub_q = after.hub_queries - before.hub_queries
    spoke_q = after.spoke_queries - before.spoke_queries
    assert hub_q <= HUB_QUERIES, f"hub chain queries over {d.payments} payments: {hub_q}"
    assert spoke_q <= SPOKE_QUERIES, f"neighbours' chain queries over {d.payments} payments: {spoke_q}"


def test_no_channel_stalls_after_the_hub_is_killed_and_restarted(hub: Hub) -> None:
    """SIGKILL mid-flow, restarted 3 s later (the unit's ``RestartSec``) on the same port."""
    balances = hub.balances()
    marks: dict[str, float] = {}

    async def kill(_: Drive) -> None:
        marks["killed"], marks["ready"] = await hub.kill_and_restart(after=1.5)

    d = hub.drive(AROUND_KILL, during=kill)
    assert d.payments == NEIGHBOURS * AROUND_KILL
    # Every channel was paying when the hub died, and paid again once it was back.
    assert all(times[0] < marks["killed"] < marks["ready"] < times[-1] for times in d.done_at), marks
    stall = d.worst_stall(marks["ready"])
    print(f"hub ready {marks['ready'] - marks['killed']:.2f} s after the kill; worst stall {stall:.2f} s; "
          f"{d.retries} payments tried again")
    assert stall <= STALL_LIMIT, (
        f"a channel waited {stall:.2f} s for a payment after the hub was ready "
        f"({marks['ready'] - marks['killed']:.2f} s after the kill)")
    _reconciles(hub, balances, d)
    for n in (hub.hub, *hub.spokes):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"


# --- two-way trade on default parameters ------------------------------------------------------
# Each on a channel of its own from the hub to a neighbour, opened with the defaults of
# ``channel open`` (lifetime 1008 blocks, step 6: about 167 direction switches).

PAY_WAIT = 5.0  # s: a payment of a flow that waits longer than this has stalled the flow


def _pay(payer: NodeProc, cid: str, pid: str) -> None:
    try:
        st = api_call(payer.datadir, "channel.pay", {"channel": cid, "amount": 1, "id": pid}, timeout=PAY_WAIT)
    except EschatonError as e:
        raise AssertionError(f"payment {pid} by {payer.name} refused or stalled: {e} "
                             f"(channel: {payer.channel(cid)})") from None
    assert st["payment_state"] == "complete", (pid, st)


async def _stream(payer: NodeProc, cid: str, tag: str, stop: asyncio.Event,
                  failures: list[str], done_at: list[float]) -> int:
    """1-sat payments one after the other until ``stop``; a payment refused or slower than
    ``PAY_WAIT`` is recorded in ``failures`` (with the channel's state then), the completion time
    of each in ``done_at``. Returns how many completed."""
    done = 0
    while not stop.is_set():
        pid = f"{tag}-{done + len(failures)}"
        try:
            st = await call_async(payer.datadir, "channel.pay", {"channel": cid, "amount": 1, "id": pid},
                                  timeout=PAY_WAIT)
            if st.get("payment_state") == "complete":
                done += 1
                done_at.append(time.monotonic())
                continue
            why: object = st
        except EschatonError as e:
            why = e
        ch = await asyncio.to_thread(payer.channel, cid)
        failures.append(f"{pid} by {payer.name}: {why} (channel {(ch or {}).get('state')})")
    return done


def test_two_way_flow_on_default_parameters_keeps_paying_across_a_reanchor(hub: Hub) -> None:
    cid = hub.open_extra(0, 10_000_000)
    x, y = hub.hub, hub.spokes[0]
    start, start_y = mirrored(x, y, cid)
    funding0, spoke_paid0 = start["funding_txid"], int(start_y["fee_paid_sat"])
    failures: list[str] = []
    done_at: dict[str, list[float]] = {x.name: [], y.name: []}

    async def flow() -> tuple[int, int]:
        """Two callers on each side pay 1 sat at a time throughout; meanwhile the hub moves the
        channel to a new anchor (as it does by itself when the switch budget runs low), the flow
        goes on with no block mined while the re-anchor waits for one, then a block confirms it."""
        stop = asyncio.Event()
        streams = [asyncio.ensure_future(_stream(n, cid, f"{n.name}{i}", stop, failures, done_at[n.name]))
                   for n in (x, y) for i in range(2)]
        await asyncio.sleep(1.5)
        await asyncio.to_thread(x.api, "channel.reanchor", channel=cid)
        await asyncio.sleep(2 * PAY_WAIT)  # no block: the re-anchor waits, the payments must not
        await asyncio.to_thread(hub.cluster.chain.mine, 1)
        for n in (x, y):
            await asyncio.to_thread(poll, lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN"
                                    and (n.channel(cid) or {}).get("funding_txid") != funding0,
                                    f"{n.name}: open on the new anchor")
        await asyncio.sleep(1.0)
        stop.set()
        counts = await asyncio.gather(*streams)
        return counts[0] + counts[1], counts[2] + counts[3]

    by_hub, by_spoke = asyncio.run(flow())
    assert not failures, f"{len(failures)} payments of the flow refused or stalled: {failures[:5]}"
    for name, times in done_at.items():
        stall = max(b - a for a, b in zip(times, times[1:], strict=False))
        assert stall <= STALL_LIMIT, f"{name}'s payments stopped for {stall:.2f} s during the flow"
    end_x, end_y = mirrored(x, y, cid)
    assert by_hub > 0 and by_spoke > 0
    # Every payment accounted for: the neighbour's balance plus its fee share moved by exactly the
    # flow; the hub's too, less the re-anchor transaction's fee (its proposer pays it).
    spoke_moved = (end_y["local_sat"] + end_y["fee_paid_sat"]) - (start_y["local_sat"] + spoke_paid0)
    assert spoke_moved == by_hub - by_spoke, (start, end_y, by_hub, by_spoke)
    hub_short = (by_spoke - by_hub) - ((end_x["local_sat"] + end_x["fee_paid_sat"]) - (start["local_sat"] + start["fee_paid_sat"]))
    assert 0 <= hub_short <= start["local_sat"] // 100, (start, end_x, by_hub, by_spoke)


def test_two_way_fees_stay_under_a_fraction_of_the_value_moved(hub: Hub) -> None:
    cid = hub.open_extra(1, 10_000_000)
    x, y = hub.hub, hub.spokes[1]
    before, _ = mirrored(x, y, cid)
    held = int(before["local_sat"]) + int(before["remote_sat"])
    wallets = {n.name: n.wallet_total() for n in (x, y)}
    # 1-sat payments flowing both ways: 20 runs of 10, alternating direction (20 switches: far
    # inside the default budget, so no re-anchor is involved).
    moved = 0
    for run in range(20):
        payer = y if run % 2 == 0 else x
        for i in range(10):
            _pay(payer, cid, f"fee-{run}-{i}")
            moved += 1
    mirrored(x, y, cid)
    # What the two parties get on chain at a cooperative close, against what they held before.
    x.cli("channel", "close", cid)
    hub.cluster.chain.mine(1)
    for n in (x, y):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "CLOSED", f"{n.name}: channel CLOSED")
    gained = poll(lambda: (g := [n.wallet_total() - wallets[n.name] for n in (x, y)]) and min(g) > 0 and g,
                  "both sides' close outputs in their wallets")
    fees = held - sum(gained)
    assert fees <= FEE_FRACTION * moved, (
        f"{fees} sat of fees to move {moved} sat both ways ({fees / moved:.0%}; bound {FEE_FRACTION:.0%})")
