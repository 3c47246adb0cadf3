"""A refused broadcast through an Electrum server keeps bitcoind's reason first, whichever
server relayed it: ElectrumX (prefix, blank line, the node's ``reason, detail``, ``[raw tx]``)
or ours (reason and detail on lines three and four)."""
from __future__ import annotations

from eschaton.chain.electrum.protocol import REFUSED_PREFIX
from eschaton.chain.electrum.spvclient import _refused


def test_electrumx_refusal() -> None:
    e = _refused(f"{REFUSED_PREFIX}\n\nnon-final\n[0200000001abcd]")
    assert (e.reason, e.detail) == ("non-final", "")
    e = _refused(f"{REFUSED_PREFIX}\n\ninsufficient fee, rejecting replacement abc\n[02000000]")
    assert (e.reason, e.detail) == ("insufficient fee", "rejecting replacement abc")


def test_our_servers_refusal() -> None:
    e = _refused(f"{REFUSED_PREFIX}\n\nbad-txns-inputs-missingorspent\nno such coin")
    assert (e.reason, e.detail) == ("bad-txns-inputs-missingorspent", "no such coin")


def test_a_bare_message() -> None:
    e = _refused("Transaction already in block chain")
    assert e.reason == "Transaction already in block chain"
