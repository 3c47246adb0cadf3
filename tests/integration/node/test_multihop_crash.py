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
CAPACITY = 1_000_000
TRIALS = int(os.environ.get("ESCHATON_MH_CRASH_TRIALS", "36" if IN_CI else "18"))

# The named steps of each role (``faults.point`` in ``daemon/routing.py``), in protocol order.
PAYER = ["pay.attempt_stored", "pay.offered", "pay.onion_sent", "pay.outcome"]
HOP = ["fwd.persisted.ACCEPTED", "fwd.offering", "fwd.offered", "fwd.persisted.OFFERED",
       "fwd.persisted.FULFILLED", "fwd.fulfilling", "fwd.persisted.SETTLED",
       "fwd.persisted.FAILED", "fwd.failing", "fwd.persisted.RETURNED"]
PAYEE = ["fwd.persisted.FULFILLED", "fwd.fulfilling", "fwd.persisted.SETTLED",
         "fwd.persisted.FAILED", "fwd.failing", "fwd.persisted.RETURNED"]


def _line(cluster: Cluster) -> tuple[list[NodeProc], list[str]]:
    disc = free_port(socket.SOCK_DGRAM)
    nodes = [cluster.node(n, listen=[f"tcp://127.0.0.1:{free_port()}"], discovery_port=disc) for n in "abc"]
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


def _final(a: NodeProc, pid: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        try:
            p = a.api("routing.payment", id=pid)
        except EschatonError:
            return None
        return p if p["state"] in ("complete", "failed") else None  # type: ignore[no-any-return]
    return poll(done, f"payment {pid} final", timeout=60)  # type: ignore[no-any-return]


def _check(nodes: list[NodeProc], cids: list[str], before: dict[str, int], paid: dict[str, Any],
           ctx: str) -> dict[str, int]:
    a, b, c = nodes
    for x, y, cid in zip(nodes, nodes[1:], cids, strict=False):
        poll(lambda x=x, y=y, cid=cid: mirrored(x, y, cid)[0]["escrows"] == 0, f"{ctx}: {cid[:12]} settled",
             timeout=60)
        vx, vy = mirrored(x, y, cid)
        assert vx["local_sat"] + vx["remote_sat"] + vx["fee_sat"] == CAPACITY, ctx
        assert vx["local_sat"] == vy["remote_sat"], ctx
    after = {n.name: sum(_close_sats(n).values()) for n in nodes}
    delta = {k: after[k] - before[k] for k in after}
    if paid["state"] == "complete":
        fee = int(paid["fee_sat"])
        assert fee > 0, ctx
        assert delta == {"a": -(AMOUNT + fee), "b": fee, "c": AMOUNT}, (ctx, delta, paid)
    else:
        assert delta == {"a": 0, "b": 0, "c": 0}, (ctx, delta, paid)
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
    _check(nodes, cids, before, paid, "durable-1")
    # The same id again pays nothing more.
    again = a.cli("pay", req["request"], "--id", "durable-1")
    assert again["state"] == "complete" and again["preimage"] == paid["preimage"]
    _check(nodes, cids, before, paid, "durable-1 again")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_any_hop_at_random_steps_every_payment_ends_and_balances_reconcile(cluster: Cluster) -> None:
    cluster.serve_chain()
    nodes, cids = _line(cluster)
    a, b, c = nodes
    rng = random.Random(int(os.environ.get("ESCHATON_CRASH_SEED", "20261208")))
    totals = {n.name: sum(_close_sats(n).values()) for n in nodes}
    # Requests that c refuses (expired): the failure rolls back c -> b -> a.
    n_fail = TRIALS // 3 + 1
    stale = [c.cli("invoice", "create", str(AMOUNT), "--expiry", "1")["request"] for _ in range(n_fail)]
    time.sleep(1.5)
    killed: dict[str, int] = {}
    outcomes = {"complete": 0, "failed": 0}
    for trial in range(TRIALS):
        victim = rng.choice(nodes)
        step = rng.choice({"a": PAYER, "b": HOP, "c": PAYEE}[victim.name])
        failing = stale and rng.random() < 1 / 3
        request = stale.pop() if failing else c.cli("invoice", "create", str(AMOUNT))["request"]
        ctx = f"trial {trial}: {victim.name} at {step}, {'failing' if failing else 'paying'}"
        fault = _fault_file(cluster, victim)
        fault.write_text(step)
        pid = f"crash-{trial}"
        t, out = _pay(a, request, pid)
        assert victim.proc is not None
        deadline = time.monotonic() + 90
        while t.is_alive() and victim.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if victim.proc.poll() is None:
            time.sleep(0.3)  # a step after the payer's answer (a settle) may still come
        if victim.proc.poll() is not None:
            killed[step] = killed.get(step, 0) + 1
            _restart(cluster, victim, nodes)
        fault.unlink(missing_ok=True)
        t.join(90)
        assert not t.is_alive(), ctx
        paid = _final(a, pid)
        outcomes[paid["state"]] += 1
        if not failing:
            assert paid["state"] == "complete" or victim is a, (ctx, paid)
        else:
            assert paid["state"] == "failed", (ctx, paid)
        totals = _check(nodes, cids, totals, paid, ctx)
        # A retry of the id pays nothing more, whatever happened.
        assert a.api("routing.pay", request=request, id=pid)["state"] == paid["state"], ctx
    print(f"multihop crash harness: {TRIALS} trials, kills per step {killed}, outcomes {outcomes}")
    assert sum(killed.values()) >= TRIALS // 2, killed
    assert outcomes["complete"] and outcomes["failed"], outcomes
    assert not [r for n in nodes for r in n.logs if "exc" in r]
