"""Fixtures: a real embedded regtest chain (libbitcoinkernel on disk) in a tmp datadir."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.embedded.index import Coin
from tests.unit.chain.helpers import Key


@dataclass
class Funded:
    node: ChainNode
    key: Key
    datadir: Path

    def coinbase(self, height: int) -> Coin:
        assert self.node.index is not None
        row = self.node.index.block_at(height)
        assert row is not None
        from eschaton.core.txcodec import decode_block

        raw = self.node.index.raw_block(height)
        assert raw is not None
        txid = decode_block(raw).txs[0].txid
        c = self.node.index.coin(txid, 0)
        assert c is not None, f"coinbase at {height} already spent"
        return c


@pytest.fixture()
def funded(tmp_path: Path) -> Iterator[Funded]:
    """A chain with 101 blocks paying ``key``: the coinbases at heights 1 and 2 are mature."""
    node = ChainNode(tmp_path)
    key = Key(1)
    node.mine(101, key.p2wpkh)
    f = Funded(node, key, tmp_path)
    yield f
    node.close()
