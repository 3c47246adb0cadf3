"""Multi-hop payments survive SIGKILL of any hop at any named step (real node processes).

A line a - b - c on the embedded chain (served apart, so any node may die). Each node runs
with ``$ESCHATON_FAULT_FILE`` set (``eschaton.daemon.faults``): a trial writes one step's name
into one node's file, that node SIGKILLs itself when it reaches the step, and is restarted.
The three processes (and their channels) live across all trials; only the victim restarts.

After every trial: the payer's payment id has reached a final state (complete or failed), no
escrow is left on either channel, both ends of each channel agree, and every node's close
balance moved by exactly the amount (c), the fee (b) and amount + fee (a) for a completed
payment, and by nothing for a failed one: no honest node loses or gains a satoshi.

``test_a_payer_killed_after_its_offer_completes_after_restart`` is the case the durable
attempts fix: the payer dies after its escrow was signed and before the first hop got the onion.
"""
from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from eschaton.api.client import call as api_call
from eschaton.errors import EschatonError
from tests.conftest import IN_CI
from tests.integration.node.harness import Cluster, NodeProc, free_port, mirrored, poll
from tests.integration.node.test_multihop import _close_sats, _fund, _open

AMOUNT = 10_000
BIG = 400_000
CAPACITY = 1_000_000
TRIALS = int(os.environ.get("ESCHATON_MH_CRASH_TRIALS", "60" if IN_CI else "30"))
"""Payments through a kill (real processes); each round runs PER_ROUND of them at once."""
PER_ROUND = 3

# The named steps of each role (``faults.point`` in ``daemon/routing.py``), in protocol order.
PAYER = ["pay.attempt_next", "pay.attempt_stored", "pay.offered", "pay.onion_sent", "event.escrow", "pay.outcome"]
HOP = ["fwd.persisted.ACCEPTED", "fwd.offering", "fwd.offered", "fwd.persisted.OFFERED", "event.escrow",
       "fwd.persisted.FULFILLED", "fwd.fulfilling", "fwd.persisted.SETTLED"]
HOP_FAILING = ["fwd.persisted.FAILED", "event.escrow", "fwd.failing", "fwd.persisted.RETURNED"]
PAYEE = ["fwd.persisted.FULFILLED", "fwd.fulfilling", "event.escrow", "fwd.persisted.SETTLED"]


def _line(cluster: Cluster) -> tuple[list[NodeProc], list[str]]:
    disc = free_port(socket.SOCK_DGRAM)
    ports = {n: free_port() for n in "abc"}
    nodes = [cluster.node(n, listen=[f"tcp://127.0.0.1:{ports[n]}"], discovery_port=disc) for n in "abc"]
    for n in nodes:
        n.start(env=_fault_env(cluster, n))
    for n in nodes:
        n.wait_ready()
    for n in nodes:
        poll(lambda n=n: len(n.linked()) == 2, f"{n.name} linked to all")
    _fund(cluster, nodes[:2])
    cids = [_open(cluster, nodes[1], nodes[2], 1008)]
    cids.insert(0, _open(cluster, nodes[0], nodes[1], 1108))
    for n in nodes:
        poll(lambda n=n: len(n.api("routing.graph")["channels"]) == 2, f"{n.name} knows every channel")
    # From now on the nodes link through static peers, without discovery (the node with the
    # smaller id dials): a restarted dialler dials at once, and a dialler redials a restarted
    # peer every 0.25 s (a discovered neighbour is redialled with a slower backoff), so a kill
    # costs about one start-up.
    for n in nodes:
        n.stop()
        extra = "".join(f'\n[[network.peers]]\nid = "{m.id}"\nurl = "tcp://127.0.0.1:{ports[m.name]}"\n'
                        for m in nodes if m.id > n.id)  # one dialler per pair: no duplicate links
        text = n.config.read_text().replace("[network.discovery]\nenabled = true",
                                            "[network.discovery]\nenabled = false")
        n.config.write_text(text + extra)
    for n in nodes:
        n.start(env=_fault_env(cluster, n))
    for n in nodes:
        n.wait_ready()
    for n in nodes:
        poll(lambda n=n: len(n.linked()) == 2, f"{n.name} linked to all")
    for x, y, cid in zip(nodes, nodes[1:], cids, strict=False):
        mirrored(x, y, cid)
    return nodes, cids


def _fault_file(cluster: Cluster, n: NodeProc) -> Path:
    return cluster.root / f"{n.name}.fault"


def _fault_env(cluster: Cluster, n: NodeProc) -> dict[str, str]:
    return {"ESCHATON_FAULT_FILE": str(_fault_file(cluster, n))}


def _restart(cluster: Cluster, n: NodeProc, nodes: list[NodeProc]) -> None:
    assert n.proc is not None
    n.proc.wait(10)
    n.kill()  # reaps the readers (the process is gone already)
    n.start(env=_fault_env(cluster, n))
    n.wait_ready()
    for m in nodes:
        poll(lambda m=m: len(m.linked()) == 2, f"{m.name} linked again")


def _pay(payer: NodeProc, request: str, pid: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = api_call(payer.datadir, "routing.pay", {"request": request, "id": pid}, timeout=90)
        except (EschatonError, OSError) as e:  # the payer itself may be the one killed
            out["result"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, out


def _final(a: NodeProc, pid: str, caller_failed: bool = False) -> dict[str, Any]:
    """The payment's final record. ``caller_failed``: the payer died while the caller asked,
    so the request may never have been taken: no record at all is then an answer ("absent")."""
    def done() -> dict[str, Any] | None:
        try:
            p = a.api("routing.payment", id=pid)
        except EschatonError as e:
            if caller_failed and "no payment" in str(e):
                return {"payment": pid, "state": "absent"}
            return None
        return p if p["state"] in ("complete", "failed") else None  # type: ignore[no-any-return]
    return poll(done, f"payment {pid} final", timeout=60)  # type: ignore[no-any-return]


def _dump(nodes: list[NodeProc], cids: list[str], ctx: str) -> None:
    """What a failed trial leaves, for the CI log."""
    print("FAILED", ctx)
    for n in nodes:
        for cid in cids:
            print(n.name, cid[:12], n.channel(cid))
        for r in n.logs[-150:]:
            if r.get("level") in ("warning", "error") or "exc" in r or "routing" in str(r.get("msg", "")):
                print(" ", n.name, str(r)[:600])


def _check(nodes: list[NodeProc], cids: list[str], before: dict[str, int], paid: list[dict[str, Any]],
           ctx: str) -> dict[str, int]:
    """No escrow left, both ends agree, and every close balance moved by exactly what the
    completed payments say (failed ones move nothing)."""
    for x, y, cid in zip(nodes, nodes[1:], cids, strict=False):
        poll(lambda x=x, y=y, cid=cid: mirrored(x, y, cid)[0]["escrows"] == 0, f"{ctx}: {cid[:12]} settled",
             timeout=60)
        vx, vy = mirrored(x, y, cid)
        assert vx["local_sat"] + vx["remote_sat"] + vx["fee_sat"] == CAPACITY, ctx
        assert vx["local_sat"] == vy["remote_sat"], ctx
    after = {n.name: sum(_close_sats(n).values()) for n in nodes}
    delta = {k: after[k] - before[k] for k in after}
    done = [p for p in paid if p["state"] == "complete"]
    fees = sum(int(p["fee_sat"]) for p in done)
    amounts = sum(int(p["amount_sat"]) for p in done)
    assert all(int(p["fee_sat"]) > 0 for p in done), (ctx, done)
    assert delta == {"a": -(amounts + fees), "b": fees, "c": amounts}, (ctx, delta, paid)
    return after


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_payer_killed_after_its_offer_completes_after_restart(cluster: Cluster) -> None:
    """The payer dies after its escrow to b is signed and before the onion left: after the
    restart it finds the attempt in its store, resends the onion to b on the link, and the
    payment completes with exact balances (before the attempts were durable, b held an escrow
    it could not forward and the payment stayed pending)."""
    cluster.serve_chain()
    nodes, cids = _line(cluster)
    a, b, c = nodes
    before = {n.name: sum(_close_sats(n).values()) for n in nodes}
    req = c.cli("invoice", "create", str(AMOUNT))
    _fault_file(cluster, a).write_text("pay.offered")
    t, out = _pay(a, req["request"], "durable-1")
    t.join(60)
    assert not t.is_alive() and not isinstance(out["result"], dict), out  # a died mid-payment
    _restart(cluster, a, nodes)
    paid = _final(a, "durable-1")
    assert paid["state"] == "complete", paid
    _check(nodes, cids, before, [paid], "durable-1")
    # The same id again pays nothing more.
    again = a.cli("pay", req["request"], "--id", "durable-1")
    assert again["state"] == "complete" and again["preimage"] == paid["preimage"]
    _check(nodes, cids, before, [paid], "durable-1 again")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hop_killed_after_its_channel_learnt_the_preimage_fulfils_upstream(cluster: Cluster) -> None:
    """b dies after its channel to c made c's fulfil durable (the preimage is in the channel)
    and before its forward record learnt it: that event is not emitted again after a restart,
    so b reads the preimage from the channel when it starts and fulfils upstream. (Before, the
    record stayed OFFERED: b paid c and was never paid by a, whose payment stayed pending.)"""
    cluster.serve_chain()
    nodes, cids = _line(cluster)
    a, b, c = nodes
    before = {n.name: sum(_close_sats(n).values()) for n in nodes}
    req = c.cli("invoice", "create", str(AMOUNT))
    _fault_file(cluster, b).write_text("event.escrow")  # b's first: EscrowFulfilled from c
    t, out = _pay(a, req["request"], "reconcile-1")
    assert b.proc is not None
    poll(lambda: b.proc is not None and b.proc.poll() is not None, "b killed at the event")
    _restart(cluster, b, nodes)
    t.join(90)
    paid = _final(a, "reconcile-1")
    assert paid["state"] == "complete", paid
    _check(nodes, cids, before, [paid], "reconcile-1")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_any_hop_at_random_steps_every_payment_ends_and_balances_reconcile(cluster: Cluster) -> None:
    """Rounds of PER_ROUND concurrent payments; in each, one random node is armed to die at a
    random step at its first, second or third pass there (so the kill lands in the first, a
    middle or the last payment of the round); a third of the payments are too big for b's
    channel to c and fail at b, rolling back to a. After each round every payment is final and
    the balances are exact (see the module docstring)."""
    cluster.serve_chain()
    nodes, cids = _line(cluster)
    a, b, c = nodes
    rng = random.Random(int(os.environ.get("ESCHATON_CRASH_SEED", "20261208")))
    # b pays most of its channel to c away: a payment of BIG then fails at b (insufficient
    # balance) and rolls back b -> a, while AMOUNT still goes through.
    b.cli("channel", "pay", cids[1], str(BIG + 200_000))
    mirrored(b, c, cids[1])
    totals = {n.name: sum(_close_sats(n).values()) for n in nodes}
    killed: dict[str, int] = {}
    outcomes = {"complete": 0, "failed": 0, "absent": 0}
    rounds = max(1, TRIALS // PER_ROUND)
    for rnd in range(rounds):
        victim = rng.choice(nodes)
        failing = [victim is not c and rng.random() < 1 / 3 for _ in range(PER_ROUND)]
        steps = {"a": PAYER, "b": HOP_FAILING if any(failing) and rng.random() < 0.5 else HOP, "c": PAYEE}
        step, nth = rng.choice(steps[victim.name]), rng.randint(1, PER_ROUND)
        ctx = f"round {rnd}: {victim.name} at {step} #{nth}, failing {failing}"
        print(ctx, flush=True)
        requests = [c.cli("invoice", "create", str(BIG if f else AMOUNT))["request"] for f in failing]
        fault = _fault_file(cluster, victim)
        fault.write_text(f"{step} {nth}")
        pids = [f"crash-{rnd}-{i}" for i in range(PER_ROUND)]
        runs = [_pay(a, r, pid) for r, pid in zip(requests, pids, strict=True)]
        assert victim.proc is not None
        deadline = time.monotonic() + 90
        while any(t.is_alive() for t, _ in runs) and victim.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if victim.proc.poll() is None:
            time.sleep(0.3)  # a step after the payer's answer (a settle) may still come
        if victim.proc.poll() is not None:
            killed[step] = killed.get(step, 0) + 1
            _restart(cluster, victim, nodes)
        fault.unlink(missing_ok=True)
        for t, _ in runs:
            t.join(90)
            assert not t.is_alive(), ctx
        try:
            paid = [_final(a, pid, not isinstance(out.get("result"), dict)) for (_t, out), pid in zip(runs, pids,
                                                                                                    strict=True)]
        except AssertionError:
            _dump(nodes, cids, ctx)
            raise
        for p, f in zip(paid, failing, strict=True):
            outcomes[p["state"]] += 1
            # A payment too big for b fails; one that fits completes, unless the payer died
            # before its escrow was signed (then nothing was locked, and it failed), or before
            # it took the request at all (its caller got an error, and there is no record).
            assert p["state"] == ("failed" if f else "complete") or (
                victim is a and p["state"] in ("failed", "absent")), (ctx, p)
        try:
            totals = _check(nodes, cids, totals, paid, ctx)
        except AssertionError:
            _dump(nodes, cids, ctx)
            raise
        for r, pid, p in zip(requests, pids, paid, strict=True):  # a retry of an id pays nothing more
            if p["state"] != "absent":
                assert a.api("routing.pay", request=r, id=pid)["state"] == p["state"], ctx
        totals = _check(nodes, cids, totals, [], ctx)
    print(f"multihop crash harness: {rounds} rounds of {PER_ROUND} payments, kills per step {killed}, "
          f"outcomes {outcomes}")
    assert sum(killed.values()) >= rounds // 2, killed
    assert outcomes["complete"] and outcomes["failed"], outcomes
    assert not [r for n in nodes for r in n.logs if "exc" in r]
