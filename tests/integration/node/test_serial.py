"""Two node processes linked only by a serial line (a socat pty pair): a listens on its end, b has
a static peer (a's pinned id) on the other end. A channel is opened, used both ways and closed
cooperatively, all through the CLI, with the close confirmed and paid out."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.integration.node.harness import Cluster, mirrored, open_channel, pay, poll

pytestmark = [pytest.mark.pty, pytest.mark.timeout(180)]


def _pty_pair(cluster: Cluster, tmp: Path) -> tuple[Path, Path]:
    socat = need_tool("socat")
    p1, p2 = tmp / "P1", tmp / "P2"
    proc = subprocess.Popen([socat, "-d", "-d", f"pty,raw,echo=0,link={p1}", f"pty,raw,echo=0,link={p2}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster.extra.append(proc)  # the cluster's finaliser stops it
    deadline = time.monotonic() + 10
    while not (p1.exists() and p2.exists()):
        assert proc.poll() is None, "socat exited"
        assert time.monotonic() < deadline, "socat did not create the ptys"
        time.sleep(0.02)
    return p1, p2


def test_channel_over_a_serial_line(cluster: Cluster, tmp_path: Path) -> None:
    p1, p2 = _pty_pair(cluster, tmp_path)
    a = cluster.node("a", listen=[f"serial://{p1}?baud=115200"])
    a.start().wait_ready()
    b = cluster.node("b", peers=[(a.id, f"serial://{p2}?baud=115200")])
    b.start().wait_ready()
    poll(lambda: a.id in b.linked() and b.id in a.linked(), "a and b linked over the serial line")
    via = {p["id"]: p.get("via", "") for p in b.cli("peer", "list")}
    assert via[a.id].startswith("serial://"), via

    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    cid = open_channel(cluster.chain, a, b, 2_000_000)
    pay(a, b, cid, 150_000)
    pay(b, a, cid, 20_000)
    pay(a, b, cid, 1_000)

    va, vb = mirrored(a, b, cid)
    ta, tb = a.wallet_total(), b.wallet_total()
    st = b.cli("channel", "close", cid)  # the acceptor closes this time
    assert st["state"] in ("CLOSING", "CLOSED"), st
    poll(lambda: (a.channel(cid) or {}).get("state") in ("CLOSING", "CLOSED"), "a sees the close")
    cluster.chain.mine(1)
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "CLOSED", f"{n.name}: CLOSED")
    poll(lambda: a.wallet_total() == ta + va["close_sat"], f"a's wallet +{va['close_sat']}")
    poll(lambda: b.wallet_total() == tb + vb["close_sat"], f"b's wallet +{vb['close_sat']}")
    for n in (b, a):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0


def test_serial_link_comes_back_after_the_dialling_node_restarts(cluster: Cluster, tmp_path: Path) -> None:
    p1, p2 = _pty_pair(cluster, tmp_path)
    a = cluster.node("a", listen=[f"serial://{p1}?baud=115200"])
    a.start().wait_ready()
    b = cluster.node("b", peers=[(a.id, f"serial://{p2}?baud=115200")])
    b.start().wait_ready()
    poll(lambda: a.id in b.linked() and b.id in a.linked(), "a and b linked over the serial line")
    assert b.stop() == 0
    poll(lambda: b.id not in a.linked(), "a notices b is gone")
    b.start().wait_ready()
    # b's static peer redials at once; the handshake itself times out after 10 s.
    poll(lambda: a.id in b.linked() and b.id in a.linked(), "a and b linked again", timeout=25)
