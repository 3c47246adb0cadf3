"""Bad requests to a running node are refused cleanly: one line on stderr, a non-zero exit, no
traceback, the node keeps running, the channel is unchanged, and the next good payment works."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from eschaton.api.client import CommandFailed
from eschaton.net.identity import load_or_create_identity
from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    channel_pair,
    mirrored,
    pay,
)

pytestmark = pytest.mark.timeout(180)

CAPACITY = 1_000_000


def _refused(node: NodeProc, *argv: str, rc: int | None = None, says: str = "") -> str:
    p = node.cli_fail(*argv)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eschaton: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout and p.stdout == ""
    assert says.lower() in lines[0].lower(), lines[0]
    if rc is not None:
        assert p.returncode == rc, (p.returncode, lines[0])
    assert node.running
    return lines[0]


def test_bad_requests_are_refused_cleanly(cluster: Cluster, tmp_path: Path) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY)
    pay(a, b, cid, 10_000)
    va, vb = mirrored(a, b, cid)

    # Paying nothing or a negative amount: refused by the CLI (usage error) and by the API.
    _refused(a, "channel", "pay", cid, "0", rc=2, says="positive")
    _refused(a, "channel", "pay", cid, "-5", rc=2)
    _refused(a, "channel", "pay", cid, "ten", rc=2, says="whole number")
    with pytest.raises(CommandFailed, match="positive"):
        a.api("channel.pay", channel=cid, amount=0)
    # More than the balance: above the channel's maximum payment, and above what the payer holds.
    _refused(a, "channel", "pay", cid, str(2 * CAPACITY), rc=1, says="max_payment")
    _refused(a, "channel", "pay", cid, str(va["local_sat"] + 1), rc=1)
    _refused(b, "channel", "pay", cid, str(vb["local_sat"] + 1), rc=1)  # takes the turn, then refuses
    # Unknown or malformed channel ids, and an escrow that does not exist.
    _refused(a, "channel", "pay", cid[::-1], "100", rc=1, says="no channel")
    _refused(a, "channel", "pay", "not-hex", "100", rc=1, says="bad channel id")
    _refused(a, "channel", "close", os.urandom(32).hex(), rc=1, says="no channel")
    _refused(a, "channel", "settle", cid, "99", rc=1)
    # Bad peer ids: malformed, and well-formed but not a linked peer.
    _refused(a, "channel", "open", "1234", "5000", rc=1, says="bad peer id")
    stranger = load_or_create_identity(tmp_path / "stranger").node_id.hex()
    _refused(a, "channel", "open", stranger, "5000", rc=1, says="not linked")
    _refused(a, "peer", "connect", "1234", "tcp://127.0.0.1:9", rc=1, says="bad node id")

    # Nothing changed, both nodes still run and log no traceback, and trading goes on.
    assert mirrored(a, b, cid) == (va, vb)
    for n in (a, b):
        assert n.running
        assert n.cli("node", "status")["channels"] == 1
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
    pay(a, b, cid, 1_000)
    pay(b, a, cid, 500)
