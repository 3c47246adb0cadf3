"""A payment whose API client went away before it was signed is cancelled: the peer holding the
turn is frozen (SIGSTOP) so the payer waits for the grant, the client times out and disconnects,
then the peer resumes and grants. The abandoned payment is not applied later and its id is not
recorded (free: a retry with it pays exactly once); a payment made afterwards is the only one
that moves money. A payment already signed when its client leaves completes, visible by id."""
from __future__ import annotations

import contextlib
import os
import signal

import pytest

from eschaton.api.client import CommandFailed
from eschaton.api.client import call as api_call
from eschaton.errors import EschatonError, TransientError
from tests.integration.node.harness import (
    Cluster,
    channel_pair,
    mirrored,
    pay,
    poll,
)

pytestmark = pytest.mark.timeout(240)


def test_pay_whose_client_left_before_signing_is_not_applied(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, 4_000_000, serve=True)
    pay(a, b, cid, 100_000)  # a holds the turn
    before_a, before_b = mirrored(a, b, cid)

    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        mark = len(b.logs)
        with pytest.raises(TransientError, match="did not answer"):
            api_call(b.datadir, "channel.pay", {"channel": cid, "amount": 7_000, "id": "gone-1"}, timeout=3)
        # Give b time to notice the disconnect (it logs the cancellation); without cancellation
        # the request would still be waiting for the turn, and the outcome below tells.
        with contextlib.suppress(AssertionError):
            b.wait_log(lambda r: "channel.pay cancelled" in str(r.get("msg", "")), "b cancels the payment",
                       start=mark, timeout=10)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # a now reads the request and grants; nothing may pay the abandoned 7,000 sat. A later payment
    # (another id) needs the turn too, so once it completes every grant has arrived.
    st = b.api("channel.pay", channel=cid, amount=1_000, id="later-1")
    assert st["payment_state"] == "complete"
    after_a, after_b = mirrored(a, b, cid)
    assert after_a["local_sat"] == before_a["local_sat"] + 1_000
    assert after_a["version"] == before_a["version"] + 1
    with pytest.raises(CommandFailed, match="no payment gone-1"):
        b.api("channel.payment", id="gone-1")
    # The id is free: sent again, it pays once.
    st = b.api("channel.pay", channel=cid, amount=7_000, id="gone-1")
    assert st["payment_state"] == "complete"
    final_a, _ = mirrored(a, b, cid)
    assert final_a["local_sat"] == before_a["local_sat"] + 8_000

    # Signed, then the client leaves (b holds the turn now; the frozen a cannot acknowledge):
    # a signed payment is never withdrawn. It completes once a is back, visible by its id.
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(TransientError, match="did not answer"):
            api_call(b.datadir, "channel.pay", {"channel": cid, "amount": 300, "id": "signed-1"}, timeout=3)
        assert b.api("channel.payment", id="signed-1")["state"] == "pending"
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    poll(lambda: b.api("channel.payment", id="signed-1")["state"] == "complete", "the signed payment completes")
    last_a, _ = mirrored(a, b, cid)
    assert last_a["local_sat"] == before_a["local_sat"] + 8_300
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
    assert before_b  # (mirrored checked both sides)


def test_non_cancellable_command_runs_to_its_end(cluster: Cluster) -> None:
    """A command that is not cancellable completes though its client left (here: a cooperative
    close waiting for the frozen peer's signature)."""
    a, b, cid = channel_pair(cluster, 4_000_000, serve=True)
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        mark = len(a.logs)
        with pytest.raises(EschatonError):
            api_call(a.datadir, "channel.close", {"channel": cid}, timeout=3)
        a.wait_log(lambda r: "channel.close: its caller went away" in str(r.get("msg", "")),
                   "a keeps closing", start=mark)
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    a.wait_log(lambda r: "channel.close (caller gone) done" in str(r.get("msg", "")), "a's close completes",
               start=mark)
    cluster.chain.mine(1)
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "CLOSED", f"{n.name}: channel CLOSED")
