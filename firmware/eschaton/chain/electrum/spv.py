"""The SPV client's state that outlives one server connection, and the list of servers.

- ``SpvHeaders``: the verified header chain (``core.spv.headers``) and its file
  (``headerstore``), the proofs already checked (txid -> height and block hash, dropped for
  heights a reorg replaced) and raw transactions already fetched (immutable, by txid, checked
  against their txid). Shared by every connection, so a reconnect or a switch of server starts
  from the headers we have.
- ``ServerPool``: the configured servers (``[chain] url``, one or several) in order. A server
  that lied (a header breaking a rule, a merkle proof that does not match our header) is
  dropped for ``DROP_SECONDS`` with one log line; the next one is used. When every server is
  dropped, the pool tries them again rather than stay deaf.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from eschaton.chain.electrum.headerstore import HeaderStore
from eschaton.core.spv.headers import Applied, HeaderChain
from eschaton.core.spv.pow import NETWORKS, NetParams

log = logging.getLogger(__name__)

DROP_SECONDS = 600.0
TX_CACHE = 4096  # raw transactions kept (what the watcher and wallet ask about again and again)


class SpvHeaders:
    def __init__(self, path: Path, network: str) -> None:
        self.params: NetParams = NETWORKS[network]
        self.store = HeaderStore(path, self.params, self.params.genesis_header)
        self.chain: HeaderChain = self.store.load()
        self.proven: dict[str, tuple[int, str]] = {}  # txid -> (height, block hash) proven
        self.txs: OrderedDict[str, bytes] = OrderedDict()

    def applied(self, r: Applied) -> None:
        """Persist what ``chain.apply`` changed; forget proofs above a fork."""
        if not r.applied or r.first_new is None:
            return
        self.store.save(self.chain, r.first_new)
        if r.fork_height is not None:
            fork = r.fork_height
            self.proven = {t: hb for t, hb in self.proven.items() if hb[0] <= fork}

    def proven_at(self, txid: str, height: int) -> bool:
        hb = self.proven.get(txid)
        return (hb is not None and hb[0] == height and height <= self.chain.height
                and self.chain.hash_at(height) == hb[1])

    def remember_tx(self, txid: str, raw: bytes) -> None:
        self.txs[txid] = raw
        self.txs.move_to_end(txid)
        while len(self.txs) > TX_CACHE:
            self.txs.popitem(last=False)

    def close(self) -> None:
        self.store.close()


@dataclass
class ServerPool:
    servers: list[tuple[str, int]]
    next: int = 0
    dropped: dict[tuple[str, int], float] = field(default_factory=dict)  # server -> until (monotonic)

    def order(self) -> list[tuple[str, int]]:
        """Servers to try, starting after the last one used, those not dropped first."""
        n = len(self.servers)
        ring = [self.servers[(self.next + i) % n] for i in range(n)]
        now = time.monotonic()
        ok = [s for s in ring if self.dropped.get(s, 0.0) <= now]
        return ok + [s for s in ring if s not in ok]

    def used(self, server: tuple[str, int]) -> None:
        self.next = (self.servers.index(server) + 1) % len(self.servers)

    def drop(self, server: tuple[str, int], why: str) -> None:
        self.dropped[server] = time.monotonic() + DROP_SECONDS
        log.error("dropping Electrum server %s:%d: %s", server[0], server[1], why)
