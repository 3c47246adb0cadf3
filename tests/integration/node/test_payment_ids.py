"""Payment ids on two real nodes: a retried ``channel pay --id`` pays once, a reused id with other
parameters is refused, ``channel payment ID`` survives restarts (clean and kill -9), and a payer
killed between persisting a payment and its acknowledgement pays exactly once when the request
is retried. The chain is owned by a separate ``chain serve`` so that either node may be killed."""
from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from eschaton.errors import EschatonError
from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    channel_pair,
    free_port,
    mirrored,
    open_channel,
    poll,
    run_cli,
)

pytestmark = pytest.mark.timeout(300)

CAPACITY = 4_000_000


def _pair(cluster: Cluster, **a_kw: object) -> tuple[NodeProc, NodeProc, str]:
    cluster.serve_chain()
    disc = free_port(socket.SOCK_DGRAM)
    a = cluster.node("a", listen=[f"tcp://127.0.0.1:{free_port()}"], discovery_port=disc, **a_kw)  # type: ignore[arg-type]
    b = cluster.node("b", listen=[f"tcp://127.0.0.1:{free_port()}"], discovery_port=disc)
    return a, b, ""


def _linked(a: NodeProc, b: NodeProc) -> None:
    poll(lambda: b.id in a.linked() and a.id in b.linked(), f"{a.name} and {b.name} linked", timeout=60)


def _fund_and_open(cluster: Cluster, a: NodeProc, b: NodeProc) -> str:
    _linked(a, b)
    cluster.chain.mine(101, to=a.api("wallet.address")["address"])
    poll(lambda: a.api("wallet.balance")["spendable"] > 0, "a has spendable coins")
    return open_channel(cluster.chain, a, b, CAPACITY)


def _moved_once(before: tuple[dict, dict], after: tuple[dict, dict], amount: int) -> None:  # type: ignore[type-arg]
    (pa, pb), (qa, qb) = before, after
    assert qa["version"] == pa["version"] + 1, (pa, qa)
    assert qb["local_sat"] == pb["local_sat"] + amount, (pb, qb)
    assert qa["local_sat"] == pa["local_sat"] - amount - (qa["fee_sat"] - pa["fee_sat"]), (pa, qa)


def test_retried_payment_id_pays_once_and_outcomes_survive_restarts(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY, serve=True, fixed_ports=True)

    before = mirrored(a, b, cid)
    first = a.cli("channel", "pay", cid, "25000", "--id", "order-1")
    assert (first["payment"], first["payment_state"]) == ("order-1", "complete")
    again = a.cli("channel", "pay", cid, "25000", "--id", "order-1")  # the client's retry
    assert (again["payment"], again["payment_state"]) == ("order-1", "complete")
    _moved_once(before, mirrored(a, b, cid), 25_000)

    # The same id with another amount (or channel) is refused in one line, and pays nothing.
    at = mirrored(a, b, cid)
    p = a.cli_fail("channel", "pay", cid, "26000", "--id", "order-1")
    assert p.stderr.count("\n") == 1 and "payment id order-1 is already used for 25000 sat" in p.stderr
    p = a.cli_fail("channel", "pay", cid, "5", "--id", "bad id")
    assert p.stderr.count("\n") == 1 and "bad payment id" in p.stderr
    assert mirrored(a, b, cid) == at

    # No id: the node makes one and returns it; it is accepted again.
    made = a.cli("channel", "pay", cid, "1000")
    pid = made["payment"]
    assert len(pid) == 32 and made["payment_state"] == "complete"
    at = mirrored(a, b, cid)
    assert a.cli("channel", "pay", cid, "1000", "--id", pid)["payment_state"] == "complete"
    assert mirrored(a, b, cid) == at

    rec = a.cli("channel", "payment", "order-1")
    assert {k: rec[k] for k in ("id", "channel", "amount", "state", "error")} == {
        "id": "order-1", "channel": cid, "amount": 25_000, "state": "complete", "error": ""}
    assert rec["created"] <= rec["updated"]
    p = a.cli_fail("channel", "payment", "never-used")
    assert p.stderr.count("\n") == 1 and "no payment never-used" in p.stderr

    # Across a clean restart and a kill -9 of the payer, the outcome is still known.
    a.stop()
    a.start().wait_ready()
    _linked(a, b)
    assert a.cli("channel", "payment", "order-1") == rec
    a.kill()
    a.start().wait_ready()
    assert a.cli("channel", "payment", "order-1")["state"] == "complete"
    _linked(a, b)
    at = mirrored(a, b, cid)
    assert a.cli("channel", "pay", cid, "25000", "--id", "order-1")["payment_state"] == "complete"
    assert mirrored(a, b, cid) == at
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"


def test_payer_killed_between_persist_and_ack_pays_once_on_retry(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY, serve=True, fixed_ports=True)
    a.cli("channel", "pay", cid, "10000", "--id", "warmup")  # the turn is a's, the link warm
    before = mirrored(a, b, cid)

    # The payee is frozen: the payer signs, persists and sends, and then waits for an ack.
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)
    outcome: list[object] = []

    def paying() -> None:
        try:
            outcome.append(a.api("channel.pay", channel=cid, amount=7_000, id="crash-1"))
        except EschatonError as e:  # the connection drops when the payer is killed
            outcome.append(e)

    t = threading.Thread(target=paying)
    try:
        t.start()
        pending = poll(lambda: a.api("channel.payment", id="crash-1"), "the payment recorded")
        assert pending["state"] == "pending" and pending["version"] == before[0]["version"] + 1
        a.kill()  # persisted, not acknowledged
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    t.join(60)
    assert not t.is_alive() and not isinstance(outcome[0], dict)

    a.start().wait_ready()
    assert a.cli("channel", "payment", "crash-1")["state"] in ("pending", "complete")
    _linked(a, b)
    retry = a.cli("channel", "pay", cid, "7000", "--id", "crash-1")
    assert retry["payment_state"] == "complete"
    _moved_once(before, mirrored(a, b, cid), 7_000)
    assert a.cli("channel", "payment", "crash-1")["state"] == "complete"


def _tmpfs_wrap(datadir: object, size: str, *, fill: bool = False) -> list[str]:
    """Run the node in its own mount namespace with ``datadir`` on a small tmpfs (nothing leaks:
    the mount goes away with the process). Existing contents are copied in first."""
    filler = 'dd if=/dev/zero of="$d/fill" bs=64k 2>/dev/null || true; ' if fill else ""
    script = ('set -e; d="$0"; s="$d.tmpfs"; mkdir -p "$s" "$d"; '
              f'mount -t tmpfs -o size={size},mode=0700 tmpfs "$s"; '
              f'cp -a "$d/." "$s/"; mount --bind "$s" "$d"; {filler}exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(datadir)]


def _in_ns(node: NodeProc, *cmd: str) -> int:
    import subprocess

    assert node.proc is not None
    return subprocess.run(["nsenter", "-t", str(node.proc.pid), "-m", *cmd], capture_output=True,
                          timeout=60).returncode


def test_full_disk_refused_at_once_with_a_definite_outcome(cluster: Cluster) -> None:
    from tests.conftest import need_root, need_tool

    need_root()
    for tool in ("unshare", "nsenter", "mount"):
        need_tool(tool)
    a, b, _ = _pair(cluster, api_outside=True)
    a.start(wrap=_tmpfs_wrap(a.datadir, "24m"))
    b.start()
    for n in (a, b):
        n.wait_ready()
    cid = _fund_and_open(cluster, a, b)
    a.cli("channel", "pay", cid, "10000", "--id", "warmup")

    _in_ns(a, "dd", "if=/dev/zero", f"of={a.datadir}/fill", "bs=64k")  # until ENOSPC
    failed_id, err = "", ""
    before = mirrored(a, b, cid)
    for i in range(100):  # SQLite reuses free pages and WAL space: a few payments may still fit
        before = mirrored(a, b, cid)
        p = run_cli("channel", "pay", cid, "100", "--id", f"full-{i}", "--config", str(a.config), check=False)
        if p.returncode != 0:
            failed_id, err = f"full-{i}", p.stderr
            break
    assert failed_id, "the full disk never refused a payment"
    assert err.count("\n") == 1 and "disk full: cannot write channel store" in err, err
    rec = a.cli("channel", "payment", failed_id)
    assert rec["state"] == "failed" and "disk full" in rec["error"] and rec["amount"] == 100
    assert mirrored(a, b, cid) == before  # nothing signed left the node
    # Still full: the retry fails again, at once.
    p2 = a.cli_fail("channel", "pay", cid, "100", "--id", failed_id)
    assert "disk full" in p2.stderr

    # Space back: the same id is tried again and pays, once.
    assert _in_ns(a, "rm", "-f", f"{a.datadir}/fill") == 0
    ok = a.cli("channel", "pay", cid, "100", "--id", failed_id)
    assert ok["payment_state"] == "complete"
    _moved_once(before, mirrored(a, b, cid), 100)
    assert a.cli("channel", "payment", failed_id)["state"] == "complete"
    assert not [r for r in a.logs if "exc" in r], "a logged a traceback"

    # A node whose datadir is on a full disk does not start: one line, non-zero exit.
    a.stop()
    a.start(wrap=_tmpfs_wrap(a.datadir, "24m", fill=True))
    assert a.proc is not None
    rc = a.proc.wait(60)
    a.stop()
    assert rc != 0
    err = "".join(a.stderr)
    assert err.count("\n") == 1 and err.startswith("eschaton: node failed to start: disk full"), err
    assert "Traceback" not in err and not [r for r in a.logs if "exc" in r]


def test_payment_events_reach_the_event_stream_once_each_with_ids(cluster: Cluster) -> None:
    """The payments facade's typed events, served by ``events.since``: the payer sees
    ``PaymentSettled`` under its payment id, the payee ``PaymentReceived`` under the id it can
    see (channel and version number), each once, numbered, and a retry adds nothing."""
    a, b, cid = channel_pair(cluster, CAPACITY, serve=True, fixed_ports=True)
    mark_a = a.api("events.since", seq=0)["head"]
    mark_b = b.api("events.since", seq=0)["head"]

    a.cli("channel", "pay", cid, "7000", "--id", "ev-1")
    a.cli("channel", "pay", cid, "7000", "--id", "ev-1")  # a retry: no second payment, no event
    a.cli("channel", "pay", cid, "3000", "--id", "ev-2")
    version = b.channel(cid)["version"]  # type: ignore[index]

    def events(n: NodeProc, mark: int, kind: str) -> list[dict]:  # type: ignore[type-arg]
        got = n.api("events.since", seq=mark, source="payments")
        assert not got["lost"]
        return [e for e in got["events"] if e["kind"] == kind]

    settled = poll(lambda: (lambda e: e if len(e) == 2 else None)(events(a, mark_a, "PaymentSettled")),
                   "a's two settled events")
    assert [(e["payment_id"], e["amount"], e["channel_id"]) for e in settled] == [
        ("ev-1", 7000, cid), ("ev-2", 3000, cid)]
    received = events(b, mark_b, "PaymentReceived")
    assert [(e["amount"], e["channel_id"], e["peer"]) for e in received] == [(7000, cid, a.id), (3000, cid, a.id)]
    assert received[-1]["number"] == version and received[0]["number"] < version
    assert received[-1]["payment_id"] == f"recv:{cid[:24]}:{version}"
    seqs = [e["seq"] for e in b.api("events.since", seq=mark_b)["events"]]
    assert seqs == sorted(set(seqs)) and seqs[0] > mark_b
    assert b.api("events.since", seq=seqs[-1])["events"] == []
    with pytest.raises(EschatonError, match="seq must not be negative"):
        b.api("events.since", seq=-1)
    out = b.cli("node", "events", "--since", str(mark_b), "--source", "payments")
    assert [e["kind"] for e in out["events"]] == ["PaymentReceived", "PaymentReceived"]
    p = b.cli_fail("node", "events", "--limit", "0")
    assert p.stderr.count("\n") == 1 and "limit must be between 1 and 1000" in p.stderr
    assert not [r for n in (a, b) for r in n.logs if "exc" in r]


@pytest.mark.slow  # 110 payments and a restart: about a minute on a loaded machine
def test_a_retry_older_than_the_kept_payment_records_is_refused_not_paid(cluster: Cluster) -> None:
    """Payment records are pruned (here: all but the newest 100 of the node, at start and every
    10 min); a retry that says when it was first asked for (``--created``) and whose record may
    be gone is refused in one line and pays nothing; a kept one still answers from its record."""
    import time

    a, b, cid = channel_pair(cluster, CAPACITY, serve=True, fixed_ports=True,
                             sections=["[channel]", "payment_records = 100", "payment_keep_hours = 0"])
    t0 = time.time()
    for i in range(110):
        assert a.api("channel.pay", channel=cid, amount=1, id=f"w-{i}")["payment_state"] == "complete"
    a.stop()
    a.start().wait_ready()  # prunes at start
    _linked(a, b)
    assert a.api("node.status")["payments_pruned"] >= 10
    p = a.cli_fail("channel", "payment", "w-0")
    assert p.stderr.count("\n") == 1 and "its record was pruned" in p.stderr
    at = mirrored(a, b, cid)
    p = a.cli_fail("channel", "pay", cid, "1", "--id", "w-0", "--created", f"{t0:.3f}")
    assert p.stderr.count("\n") == 1 and "is no longer known here, so it is not paid again" in p.stderr, p.stderr
    assert mirrored(a, b, cid) == at
    # A kept record answers the retry (nothing paid again), whatever it says of its time.
    kept = a.cli("channel", "pay", cid, "1", "--id", "w-109", "--created", f"{t0:.3f}")
    assert kept["payment_state"] == "complete" and mirrored(a, b, cid) == at
    # Older than the retention in days: refused even before any record of that age was pruned.
    p = a.cli_fail("channel", "pay", cid, "1", "--id", "new-old", "--created", f"{time.time() - 31 * 86_400:.0f}")
    assert "not paid again" in p.stderr and mirrored(a, b, cid) == at
    # A new id that says it is new pays.
    fresh = a.cli("channel", "pay", cid, "1", "--id", "new-1", "--created", f"{time.time():.3f}")
    assert fresh["payment_state"] == "complete" and mirrored(a, b, cid)[0]["version"] == at[0]["version"] + 1
