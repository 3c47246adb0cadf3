"""A hub and its neighbours for soak runs: real ``eschaton node run`` processes on loopback.

One hub node and N neighbour nodes, each neighbour with a channel to the hub (opened and funded
by the hub, as a village gateway does), and 1-sat payments driven through the nodes' local API
(the client the CLI uses) both ways at once: on every channel, batches of payments alternate
between the neighbour paying the hub and the hub paying the neighbour, and all channels run
concurrently, so the hub is always paying on some channels while being paid on others.

The chain is owned by a separate ``chain serve`` so that the hub can be killed with SIGKILL
(the neighbours keep their chain) and so that every node's chain-server queries are counted
(``node.status`` chain.requests counts a client's requests; a chain owner reports none).

What a run measures (``Sample`` and ``Drive``):
- the hub's resident memory, VmRSS from ``/proc/PID/status``;
- log bytes: what each node wrote to its stdout (its JSON log lines, as the harness captures
  them), counted by the reader thread;
- store bytes: ``write_bytes`` of ``/proc/PID/io`` (bytes the process sent to the block layer;
  the node writes no other files: its logs go to a pipe and the chain is the server's), plus the
  size of the hub's ``channels.db`` and its WAL;
- chain-server queries of the hub and of all neighbours;
- fee sats: the sum over channels of what a cooperative close would pay in fees now, and of
  the versions' fees (the fee steps of direction switches, held in reserve until the close);
- every payment's completion time per channel, from which the worst stall is computed: the
  longest gap between completed payments on any channel after the hub is back from a kill -9
  (the gap before the first payment after the restart counts from the moment the hub is ready).

Payments carry ids; one interrupted by the kill is retried with the same id (a retry never pays
twice), so the counts of payments made each way are exact and every channel reconciles.
"""
from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from eschaton.api.client import call_async
from eschaton.errors import EschatonError
from tests.integration.node.harness import Cluster, NodeProc, free_port, mirrored, poll

PAY_TIMEOUT = 30.0  # s: one API call (the node's own request timeout is of this order)
RETRY_FOR = 60.0  # s: a payment is retried (same id) this long before the run fails
RETRY_EVERY = 0.05  # s between two tries while the peer or the hub is down


class CountingNode(NodeProc):
    """A ``NodeProc`` that also counts the bytes and lines of log it wrote to stdout."""

    log_bytes: int = 0
    log_lines: int = 0

    def _read_out(self, proc: subprocess.Popen[str]) -> None:
        import json

        assert proc.stdout is not None
        for line in proc.stdout:
            self.log_bytes += len(line.encode())
            self.log_lines += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = {"msg": line.rstrip(), "raw": True}
            self.logs.append(rec if isinstance(rec, dict) else {"msg": line.rstrip(), "raw": True})


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError(f"no write_bytes in /proc/{pid}/io")


@dataclass(frozen=True)
class Sample:
    """Counters of the hub and its neighbours at one moment."""

    at: float  # time.monotonic()
    rss_kib: int  # the hub's
    log_bytes: int  # hub + neighbours
    hub_log_bytes: int
    store_written: int  # the hub's write_bytes since its (last) start
    store_size: int  # the hub's channels.db + WAL
    db_size: int  # the hub's channels.db alone (the WAL is reused after each checkpoint)
    hub_commits: int  # the hub's channel store transactions (fsyncs) since its (last) start
    hub_queries: int  # the hub's chain-server requests since its (last) start
    spoke_queries: int  # the neighbours' (they are never restarted)
    fee_sat: int  # sum over channels of the fee their cooperative closes would pay now
    reserve_sat: int  # sum over channels of the current version's fee (steps held in reserve)


@dataclass(frozen=True)
class Balance:
    """One channel: each side's balance, the version's fee and each side's share of it (the fee
    steps it reserved), and what each side would get at a cooperative close now."""

    hub: int
    spoke: int
    fee: int
    hub_fee_paid: int
    spoke_fee_paid: int
    hub_close: int
    spoke_close: int

    @property
    def close_fee(self) -> int:
        return self.hub + self.spoke + self.fee - self.hub_close - self.spoke_close


@dataclass
class Drive:
    """What one ``Hub.drive`` did: payments each way and when each completed, per channel."""

    paid_by_spoke: list[int]  # per channel: 1-sat payments the neighbour made to the hub
    paid_by_hub: list[int]
    done_at: list[list[float]]  # per channel: monotonic completion time of each payment
    retries: int = 0

    @property
    def payments(self) -> int:
        return sum(self.paid_by_spoke) + sum(self.paid_by_hub)

    def worst_stall(self, since: float) -> float:
        """The longest time any channel went without a completed payment after ``since`` (the
        first gap counts from ``since``); a channel with no payment after it stalls to its end."""
        worst = 0.0
        for times in self.done_at:
            prev = since
            for t in times:
                if t > since:
                    worst = max(worst, t - prev)
                    prev = t
        return worst


@dataclass
class Hub:
    cluster: Cluster
    hub: CountingNode
    spokes: list[CountingNode]
    channels: list[str] = field(default_factory=list)  # channels[k]: hub <-> spokes[k]
    _seq: int = 0

    # --- start ---------------------------------------------------------------------------------

    @classmethod
    def start(cls, cluster: Cluster, n: int, capacity: int = 10_000_000, spoke_share: int = 2_000_000,
              lifetime: int = 1008, step: int = 6) -> Hub:
        """A hub and ``n`` neighbours, linked, a channel of ``capacity`` to each (opened by the
        hub with ``lifetime`` and ``step``), and ``spoke_share`` paid to each neighbour so that
        either side can pay (and pay the fee step of a direction switch)."""
        cluster.serve_chain()
        root, chain_dir = cluster.root, cluster.chain.datadir
        url = f"tcp://127.0.0.1:{free_port()}"  # fixed: the neighbours redial it after a restart
        hub = CountingNode(root, "hub", chain_dir=chain_dir, listen=[url])
        cls._add(cluster, hub)
        hub.start()
        hub.wait_ready()
        spokes = [CountingNode(root, f"n{k:02d}", chain_dir=chain_dir, peers=[(hub.id, url)])
                  for k in range(n)]
        for s in spokes:
            cls._add(cluster, s)
            s.start()
        for s in spokes:
            s.wait_ready()
        ids = {s.id for s in spokes}
        poll(lambda: ids <= hub.linked(), f"{n} neighbours linked to the hub", timeout=60)
        self = cls(cluster, hub, spokes)
        # One mature coinbase per channel: each funding spends a confirmed coin of its own.
        cluster.chain.mine(101 + n, to=hub.api("wallet.address")["address"])
        poll(lambda: hub.api("wallet.balance")["spendable"] >= n * capacity, "the hub's coins mature")
        for s in spokes:
            st = hub.api("channel.open", peer=s.id, capacity=capacity, lifetime=lifetime, step=step)
            self.channels.append(str(st["channel"]))
        poll(lambda: all((hub.channel(c) or {}).get("state") == "FUNDING_BROADCAST" for c in self.channels),
             "every funding broadcast")
        cluster.chain.mine(1)
        for s, c in zip(spokes, self.channels, strict=True):
            poll(lambda s=s, c=c: (s.channel(c) or {}).get("state") == "OPEN"
                 and (hub.channel(c) or {}).get("state") == "OPEN", f"{s.name}: channel OPEN", timeout=60)
        for s, c in zip(spokes, self.channels, strict=True):
            st = hub.api("channel.pay", channel=c, amount=spoke_share)
            assert st["payment_state"] == "complete", st
            mirrored(hub, s, c)
        return self

    @staticmethod
    def _add(cluster: Cluster, node: CountingNode) -> None:
        cluster.nodes.append(node)
        node.cluster_nodes = cluster.nodes

    # --- measuring -----------------------------------------------------------------------------

    def sample(self) -> Sample:
        assert self.hub.proc is not None
        pid = self.hub.proc.pid
        db = self.hub.datadir / "channels.db"
        size = sum(p.stat().st_size for p in (db, db.with_name("channels.db-wal")) if p.exists())
        status = self.hub.api("node.status")
        bs = self.balances()
        return Sample(
            at=time.monotonic(), rss_kib=rss_kib(pid),
            log_bytes=self.hub.log_bytes + sum(s.log_bytes for s in self.spokes),
            hub_log_bytes=self.hub.log_bytes,
            store_written=write_bytes(pid), store_size=size, db_size=db.stat().st_size,
            hub_commits=int(status["channel_store_commits"]),
            hub_queries=int(status["chain"]["requests"]),
            spoke_queries=sum(int(s.api("node.status")["chain"]["requests"]) for s in self.spokes),
            fee_sat=sum(b.close_fee for b in bs), reserve_sat=sum(b.fee for b in bs),
        )

    def balances(self) -> list[Balance]:
        """Per channel, once both sides agree (hub's view, the neighbour's mirrors it)."""
        out = []
        for s, c in zip(self.spokes, self.channels, strict=True):
            h, n = mirrored(self.hub, s, c)
            out.append(Balance(hub=int(h["local_sat"]), spoke=int(n["local_sat"]), fee=int(h["fee_sat"]),
                               hub_fee_paid=int(h["fee_paid_sat"]), spoke_fee_paid=int(n["fee_paid_sat"]),
                               hub_close=int(h["close_sat"]), spoke_close=int(n["close_sat"])))
        return out

    # --- driving -------------------------------------------------------------------------------

    def drive(self, per_channel: int, batch: int = 25,
              during: Callable[[Drive], Awaitable[None]] | None = None) -> Drive:
        """``per_channel`` 1-sat payments on every channel at once, in batches of ``batch`` that
        alternate direction (the neighbour pays first). ``during(drive)``, if given, runs
        concurrently (e.g. kills and restarts the hub) while the payments go on."""
        return asyncio.run(self._drive(per_channel, batch, during))

    async def _drive(self, per_channel: int, batch: int,
                     during: Callable[[Drive], Awaitable[None]] | None) -> Drive:
        n = len(self.channels)
        d = Drive([0] * n, [0] * n, [[] for _ in range(n)])
        self._seq += 1
        run = self._seq

        async def channel(k: int) -> None:
            for i in range(per_channel):
                by_spoke = (i // batch) % 2 == 0
                payer = self.spokes[k] if by_spoke else self.hub
                await self._pay(d, payer, self.channels[k], f"soak{run}-{k}-{i}")
                d.done_at[k].append(time.monotonic())
                if by_spoke:
                    d.paid_by_spoke[k] += 1
                else:
                    d.paid_by_hub[k] += 1

        tasks: list[Awaitable[None]] = [channel(k) for k in range(n)]
        if during is not None:
            tasks.append(during(d))
        await asyncio.gather(*tasks)
        return d

    async def _pay(self, d: Drive, payer: NodeProc, cid: str, pid: str) -> None:
        """One payment by id, retried with the same id while the hub or the link is down."""
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                st = await call_async(payer.datadir, "channel.pay", {"channel": cid, "amount": 1, "id": pid},
                                      timeout=PAY_TIMEOUT)
                if st.get("payment_state") == "complete":
                    return
                last: object = st
            except (EschatonError, OSError) as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"payment {pid} by {payer.name} not complete after {RETRY_FOR:.0f} s: {last}")
            d.retries += 1
            await asyncio.sleep(RETRY_EVERY)

    async def kill_and_restart(self, after: float, down: float = 3.0) -> tuple[float, float]:
        """``after`` s into a drive: SIGKILL the hub, start it again ``down`` s later on the same
        port (the unit's ``RestartSec=3``) and wait until it is ready. Returns (killed at, ready
        at), monotonic."""
        await asyncio.sleep(after)
        await asyncio.to_thread(self.hub.kill)
        killed = time.monotonic()
        await asyncio.sleep(down)
        await asyncio.to_thread(self.hub.start)
        await asyncio.to_thread(self.hub.wait_ready)
        return killed, time.monotonic()

    def open_extra(self, spoke: int, capacity: int, lifetime: int = 1008, step: int = 6) -> str:
        """One more channel from the hub to ``spokes[spoke]`` (not driven by ``drive``), open, with
        ``capacity // 5`` paid to the neighbour so that both sides can pay."""
        s = self.spokes[spoke]
        cid = str(self.hub.api("channel.open", peer=s.id, capacity=capacity, lifetime=lifetime,
                               step=step)["channel"])
        poll(lambda: (self.hub.channel(cid) or {}).get("state") == "FUNDING_BROADCAST", "the funding broadcast")
        self.cluster.chain.mine(1)
        for n in (self.hub, s):
            poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN", f"{n.name}: channel OPEN", timeout=60)
        st = self.hub.api("channel.pay", channel=cid, amount=capacity // 5)
        assert st["payment_state"] == "complete", st
        mirrored(self.hub, s, cid)
        return cid
