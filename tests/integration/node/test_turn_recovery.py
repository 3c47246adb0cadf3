"""A turn request lost with its holder does not stall the channel: the holder (the payee) is
frozen while the other side's request is in flight, then SIGKILLed, so the request dies in its
socket buffer. Once the holder is back and linked, the requester's reestablish asks again, the
turn comes, and the waiting payment completes instead of timing out. The chain is owned by a
separate ``chain serve`` so that killing a node never takes the chain away from the other."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from eschaton.api.client import call as api_call
from eschaton.errors import EschatonError
from tests.integration.node.harness import (
    Cluster,
    channel_pair,
    mirrored,
    pay,
)

pytestmark = pytest.mark.timeout(240)


def test_turn_request_lost_with_a_killed_holder_is_asked_again(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, 4_000_000, serve=True, fixed_ports=True)
    pay(a, b, cid, 100_000)  # a holds the turn now; b has something to pay back with
    before_a, before_b = mirrored(a, b, cid)
    assert b.api("node.status")["turn_requests_resent"] == 0

    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)  # a stops reading: b's request will sit in its buffer
    outcome: dict[str, object] = {}

    def paying() -> None:
        try:
            outcome["result"] = api_call(b.datadir, "channel.pay", {"channel": cid, "amount": 5_000, "id": "back-1"},
                                         timeout=90)
        except EschatonError as e:
            outcome["result"] = e

    mark = len(b.logs)
    t = threading.Thread(target=paying)
    t.start()
    # The request was sent before the wait began; the wait says what it waits for.
    b.wait_log(lambda r: "waiting for the peer to grant the turn" in str(r.get("msg", "")),
               "b waits for the turn", start=mark)
    a.kill()  # SIGKILL works on a stopped process: the request dies unread
    a.start()
    a.wait_ready()
    t.join(90)
    assert not t.is_alive(), "the payment never returned"
    result = outcome["result"]
    assert isinstance(result, dict), f"the payment failed instead of getting the turn: {result}"
    assert result["payment"] == "back-1" and result["payment_state"] == "complete"
    # The protocol: b asked again on the new link (the restarted a had forgotten the request).
    assert b.api("node.status")["turn_requests_resent"] >= 1
    after_a, after_b = mirrored(a, b, cid)
    assert after_a["local_sat"] == before_a["local_sat"] + 5_000
    assert after_a["version"] == before_a["version"] + 1
    assert b.api("channel.payment", id="back-1")["state"] == "complete"
    pay(a, b, cid, 1_000)  # and the turn moves on as usual
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
