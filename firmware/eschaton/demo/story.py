"""The village story, step by step, driving real node processes through their APIs.

Rules / theory of operation:
- Setup: start the gateway (chain owner), then the houses; fund each buyer's wallet on the
  embedded chain (a coinbase each, then 100 blocks to mature them); each buyer opens a trade
  channel to each of its sellers; blocks are mined until every channel is open.
- Story: sellers offer terms as soon as their buyer is linked; buyers accept; water and power
  flow and are invoiced and paid. Then house 1 stops paying for water: its unpaid amount
  passes the credit limit and house 2 closes the valve. House 1 pays; the valve reopens. Then a
  bypass upstream of house 2's meters raises a loss alarm. In the evening the pumps stop, the
  last invoices are paid, and the summary checks paid == metered x price (floor rule).
- Every step waits on observable state (the nodes' own status), never on a fixed sleep alone,
  and is bounded by the overall deadline.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eschaton.demo.village import (
    Chain,
    DemoError,
    House,
    Sale,
    api,
    default_village,
    set_flows,
    start_node,
    stop_all,
    wait_ready,
    write_configs,
)

CHANNEL_SAT = 200_000


class Story:
    def __init__(self, base: Path, duration: float, report: Callable[[Story], None],
                 houses: tuple[list[House], list[Sale]] | None = None) -> None:
        self.base = base
        self.houses, self.sales = houses or default_village()
        self.by = {h.name: h for h in self.houses}
        self.chain_dir = base / "chain"
        self.t0 = time.monotonic()
        self.deadline = self.t0 + duration
        # Pauses that let a watcher read the table shrink when the run is bounded tightly
        # (``--duration 60`` in CI); the waits on real events never shrink.
        self.pace = min(1.0, max(0.3, (duration - 35.0) / 55.0))
        self.phase = "starting"
        self.log: list[tuple[float, str]] = []
        self.snapshot: dict[str, Any] = {}
        self.report = report
        self.checks: list[tuple[str, bool]] = []
        self.chain: Chain | None = None

    # --- helpers ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.phase = text
        self.log.append((time.monotonic() - self.t0, text))
        self.report(self)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def until(self, what: str, pred: Callable[[], Awaitable[bool]], timeout: float,
                    poll: float = 0.5, mine: bool = False) -> None:
        end = min(time.monotonic() + timeout, self.deadline)
        while True:
            await self.refresh()
            if await pred():
                return
            if time.monotonic() > end:
                raise DemoError(f"timed out waiting for {what}")
            if mine and self.chain is not None:
                await self.chain.mine(1)
            await asyncio.sleep(poll)

    async def refresh(self) -> None:
        """Collect every node's status (for the view and the checks)."""
        snap: dict[str, Any] = {}
        for h in self.houses:
            if h.name == "gateway" or h.proc is None:
                continue
            try:
                snap[h.name] = {"mg": await api(h, "microgrid.status"),
                                "channels": await api(h, "channel.list")}
            except Exception as e:  # a node restarting: show it, keep going
                snap[h.name] = {"error": str(e)}
        self.snapshot = snap
        self.report(self)

    def sell_row(self, meter: str) -> dict[str, Any]:
        seller = next(s.seller for s in self.sales if s.meter == meter)
        rows = self.snapshot.get(seller, {}).get("mg", {}).get("sell", [])
        return next((r for r in rows if r["meter"] == meter), {})

    def recent(self, house: str) -> list[dict[str, Any]]:
        return list(self.snapshot.get(house, {}).get("mg", {}).get("recent", []))

    # --- the story -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.setup()
            await self.trade()
        finally:
            self.phase = "stopping the village"
            self.report(self)
            if self.chain is not None:
                await self.chain.__aexit__(None, None, None)
            stop_all(self.houses)

    async def setup(self) -> None:
        self.say("writing configs and node keys")
        write_configs(self.base, self.houses, self.chain_dir)
        gw = self.by["gateway"]
        self.say("starting the gateway (it owns the village chain)")
        start_node(gw)
        await wait_ready(gw)
        self.chain = await Chain(self.chain_dir).__aenter__()
        self.say("starting the houses")
        for h in self.houses:
            if h.name != "gateway":
                start_node(h)
        for h in self.houses:
            if h.name != "gateway":
                await wait_ready(h)
        self.say("funding the buyers' wallets on the embedded chain")
        buyers = [h for h in self.houses if h.buys]
        for h in buyers:
            addr = (await api(h, "wallet.address"))["address"]
            await self.chain.mine(1, addr)
        await self.chain.mine(100)

        async def funded() -> bool:
            for h in buyers:
                if (await api(h, "wallet.balance"))["spendable"] < CHANNEL_SAT * 3:
                    return False
            return True

        await self.until("wallets to see their coins", funded, 60)
        self.say("opening trade channels (buyer -> seller) and mining them in")
        pairs = sorted({(s.buyer, s.seller) for s in self.sales})

        async def linked() -> bool:
            for b, s in pairs:
                peers = (await api(self.by[b], "node.status"))["peers"]
                if self.by[s].node_id not in peers:
                    return False
            return True

        await self.until("buyers to link to their sellers", linked, 30)
        for b, s in pairs:
            await api(self.by[b], "channel.open", peer=self.by[s].node_id, capacity=CHANNEL_SAT)
            await self.chain.mine(1)  # each funding spends change of the previous one

        async def channels_open() -> bool:
            for b, s in pairs:
                chans = await api(self.by[b], "channel.list")
                if not any(c["peer"] == self.by[s].node_id and c["state"] == "OPEN" for c in chans):
                    return False
            return True

        await self.until("channels to open", channels_open, 60, mine=True)

    async def trade(self) -> None:
        self.say("sellers offer terms; buyers accept; water and power flow")

        async def agreed() -> bool:
            return all(self.sell_row(s.meter).get("agreed") for s in self.sales)

        await self.until("agreements", agreed, 30)

        async def paid_some() -> bool:
            return all(self.sell_row(s.meter).get("paid_sat", 0) > 0 for s in self.sales)

        await self.until("first payments", paid_some, 30)
        await self.linger(12)

        victim = next(s for s in self.sales if s.kind == "water" and s.buyer == "house1")
        buyer, seller = self.by[victim.buyer], self.by[victim.seller]
        self.say(f"{victim.buyer} stops paying for water ({victim.meter}); "
                 f"credit limit {victim.credit_limit_sat} sat")
        await api(buyer, "microgrid.hold", meter=victim.meter, paused=True)

        async def cut() -> bool:
            return self.sell_row(victim.meter).get("supply") == "cut"

        await self.until("the cut-off", cut, 40, poll=0.25)
        row = self.sell_row(victim.meter)
        self.say(f"{victim.seller} closed the valve: {row.get('unpaid_sat')} sat unpaid > "
                 f"{victim.credit_limit_sat} sat credit; no water flows to {victim.buyer}")
        await self.linger(8)
        self.say(f"{victim.buyer} pays what it owes")
        await api(buyer, "microgrid.hold", meter=victim.meter, paused=False)

        async def restored() -> bool:
            return self.sell_row(victim.meter).get("supply") == "on"

        await self.until("reconnection", restored, 30, poll=0.25)
        self.say(f"paid: {victim.seller} reopened the valve; water flows to {victim.buyer} again")
        await self.linger(10)

        if seller.bulk:
            self.say(f"someone taps the pipe upstream of {seller.name}'s meters (bypass)")
            set_flows(seller, extra=True)

            async def alarmed() -> bool:
                return any(e["kind"] == "loss_alarm" for e in self.recent(seller.name))

            try:
                await self.until("the loss alarm", alarmed, 20)
                self.say(f"{seller.name}: loss alarm (bulk meter vs downstream meters)")
            except DemoError:
                self.say("no loss alarm yet (short run)")
            await self.linger(4)
            set_flows(seller, extra=False)

        self.say("evening: pumps and panels stop; the last invoices are paid")
        for h in self.houses:
            set_flows(h, stopped=True)
        await self.settle()

    async def linger(self, seconds: float) -> None:
        end = min(time.monotonic() + seconds * self.pace, self.deadline - 15)
        while time.monotonic() < end:
            await self.refresh()
            await asyncio.sleep(0.5)

    async def settle(self) -> None:
        async def settled() -> bool:
            rows = [self.sell_row(s.meter) for s in self.sales]
            return all(r.get("invoiced_sat") == r.get("paid_sat") and
                       r.get("invoiced_units") == r.get("units") for r in rows)

        await asyncio.sleep(1.0)
        await self.until("the last payments", settled, 30)
        self.check_books()
        self.say("done")

    def check_books(self) -> None:
        """paid == floor(units x price / scale) per contract; channel balances agree."""
        self.checks = []
        for s in self.sales:
            r = self.sell_row(s.meter)
            units = r["invoiced_units"] - r["anchor_units"]
            due = units * s.price_msat // (1000 * 1000)  # floor; one agreement, no fees
            self.checks.append((f"{s.meter}: {units} {'mL' if s.kind == 'water' else 'Wh'} x "
                                f"{s.price_msat} msat -> {due} sat due, {r['paid_sat']} paid",
                                r["paid_sat"] == due == r["invoiced_sat"]))
        for b, sname in sorted({(s.buyer, s.seller) for s in self.sales}):
            chans = self.snapshot[sname]["channels"]
            got = sum(c["local_sat"] for c in chans if c["peer"] == self.by[b].node_id
                      and c["role"] == "acceptor")
            paid = sum(self.sell_row(s.meter)["paid_sat"] for s in self.sales
                       if s.buyer == b and s.seller == sname)
            self.checks.append((f"channel {b} -> {sname}: {got} sat moved, {paid} sat billed", got == paid))
