"""Only the chain's owner makes blocks.

Over TCP (the loopback port and a ``[chain] serve`` address) ``eschaton.mine``,
``eschaton.mine_branch`` and ``eschaton.submit_block`` are refused with a clear error and the tip
does not move, while read-only methods and broadcast still work. Another local user (``nobody``)
can mine neither over TCP nor through the owner socket, even when the socket's modes are opened
up by mistake (the server checks the peer's uid). The owner can, through its socket.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiorpcx import RPCError, RPCSession, connect_rs

from eschaton.chain.electrum import protocol as P
from eschaton.chain.electrum.client import ElectrumChainClient
from eschaton.chain.electrum.server import ElectrumServer
from eschaton.chain.embedded.blocks import build_block
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.errors import ChainError, NotOwner
from tests.conftest import need_root, need_tool
from tests.unit.chain.helpers import Key, spend_p2wpkh

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[3]
FEE = 2_000


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _block_on_tip(node: ChainNode) -> bytes:
    """A valid empty block on the current tip (that the owner's socket then accepts)."""
    tip = node.tip()
    return build_block(tip.block_hash, tip.height + 1, node.block_time(tip.median_time_past),
                       Key(7).p2wpkh, [], 0)


def _fork_point(node: ChainNode, depth: int) -> str:
    assert node.index is not None
    row = node.index.block_at(node.tip().height - depth)
    assert row is not None
    return row.hash


def test_tcp_is_read_only_plus_broadcast(tmp_path: Path) -> None:
    async def run() -> None:
        node = ChainNode(tmp_path)
        k = Key(1)
        node.mine(101, k.p2wpkh)
        # A second loopback address stands for the mesh address of ``[chain] serve``.
        serve = ("127.0.0.2", _free_port("127.0.0.2"))
        server = ElectrumServer(node, also=serve)
        port = await server.start()
        try:
            assert node.index is not None
            coins = sorted(node.index.coins_for_scripthash(hashlib.sha256(k.p2wpkh).digest()),
                           key=lambda c: c.height)  # the two oldest coinbases are mature
            raw = _block_on_tip(node)
            broadcast: list[str] = []
            for (host, p), coin in zip((("127.0.0.1", port), serve), coins, strict=False):
                async with connect_rs(host, p, session_factory=RPCSession) as s:
                    tip = node.tip()
                    for method, args in (("eschaton.mine", [3]),
                                         ("eschaton.mine_branch", [_fork_point(node, 5), 6]),
                                         ("eschaton.submit_block", [raw.hex()])):
                        with pytest.raises(RPCError) as e:
                            await s.send_request(method, args)
                        assert e.value.code == P.NOT_OWNER, (host, method, e.value)
                        assert f"{method} refused: only the chain's owner may make blocks" in e.value.message
                        assert "through chain/electrum.sock as the owner's user" in e.value.message
                    assert node.tip() == tip, (host, "the tip moved")
                    # Read-only methods and broadcast work.
                    assert (await s.send_request("eschaton.tip"))["height"] == tip.height
                    unspent = await s.send_request("blockchain.scripthash.listunspent", [P.scripthash(k.p2wpkh)])
                    assert len(unspent) == 101 - len(broadcast)  # minus the spends in the mempool
                    spend = spend_p2wpkh(coin.txid, coin.vout, coin.value, k, [(coin.value - FEE, Key(9).p2wpkh)])
                    broadcast.append(await s.send_request("blockchain.transaction.broadcast", [spend.hex()]))
                    assert broadcast[-1] in node.mempool

            # Eschaton's own client over TCP: the refusal is a typed, one-line error.
            tcp = await ElectrumChainClient.connect("127.0.0.1", port)
            try:
                with pytest.raises(NotOwner, match="only the chain's owner may make blocks"):
                    await tcp.mine(1)
                with pytest.raises(NotOwner):
                    await tcp.submit_block(raw)
                assert (await tcp.tip()).height == 101
            finally:
                await tcp.close()

            # The owner socket: the very same requests work.
            owner = await ElectrumChainClient.connect_owner(server.socket_path)
            try:
                bh, active = await owner.submit_block(raw)
                assert active and node.tip().block_hash == bh
                (b103,) = await owner.mine(1)
                for txid in broadcast:
                    assert node.index.tx_location(txid) == (103, b103)
                branch = await owner.mine_branch(_fork_point(node, 2), 3)
                assert node.tip().block_hash == branch[-1] and node.tip().height == 104
            finally:
                await owner.close()
            assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(server.port_file).st_mode) == 0o600
        finally:
            await server.stop()
            node.close()

    asyncio.run(run())


def test_a_datadir_too_deep_for_the_owner_socket_is_one_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    node = ChainNode(deep)

    async def run() -> None:
        server = ElectrumServer(node)
        with pytest.raises(ChainError, match="owner socket path is too long for a unix socket"):
            await server.start()
        assert not server.port_file.exists() and not server.socket_path.exists()

    try:
        asyncio.run(run())
    finally:
        node.close()


_INTRUDER = r"""
import asyncio, json, sys
from eschaton.chain.electrum.client import ElectrumChainClient
from eschaton.chain.errors import NotOwner

async def main():
    port, sock, fork, raw = int(sys.argv[1]), sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])
    out = {}
    c = await ElectrumChainClient.connect("127.0.0.1", port)
    out["tcp_tip"] = (await c.tip()).height
    for name, call in (("mine", lambda: c.mine(3)), ("mine_branch", lambda: c.mine_branch(fork, 5)),
                       ("submit_block", lambda: c.submit_block(raw))):
        try:
            await call()
            out["tcp_" + name] = "accepted"
        except NotOwner:
            out["tcp_" + name] = "refused"
    await c.close()
    try:
        o = await ElectrumChainClient.connect_owner(sock)
    except PermissionError:
        out["socket"] = "permission denied"
    else:
        for name, call in (("mine", lambda: o.mine(3)), ("mine_branch", lambda: o.mine_branch(fork, 5)),
                           ("submit_block", lambda: o.submit_block(raw))):
            try:
                await call()
                out["socket_" + name] = "accepted"
            except NotOwner:
                out["socket_" + name] = "refused"
        out["socket_tip"] = (await o.tip()).height  # read-only still works for it
        await o.close()
    print(json.dumps(out), flush=True)

asyncio.run(main())
"""


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A directory ``nobody`` can traverse (pytest's tmp_path is 0700 root's)."""
    d = Path(tempfile.mkdtemp(prefix=f"eschaton-owner-{os.getpid()}-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_nobody(*argv: str) -> list[str]:
    return [need_tool("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "firmware"), str(REPO)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


async def _run_as_nobody(*argv: str) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(*_as_nobody(*argv), stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE, env=_env())
    out, err = await asyncio.wait_for(p.communicate(), 120)
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


def test_another_local_user_cannot_mine(shared_tmp: Path) -> None:
    need_root()

    async def run() -> None:
        node = ChainNode(shared_tmp)
        node.mine(101, Key(1).p2wpkh)
        server = ElectrumServer(node)
        port = await server.start()
        try:
            tip = node.tip()
            fork, raw = _fork_point(node, 4), _block_on_tip(node).hex()
            intruder = (sys.executable, "-c", _INTRUDER, str(port), str(server.socket_path), fork, raw)

            # As installed: the chain directory is 0700, so the socket cannot even be reached.
            assert stat.S_IMODE(os.stat(node.chain_dir).st_mode) == 0o700
            rc, out, err = await _run_as_nobody(*intruder)
            assert rc == 0, err
            assert json.loads(out) == {"tcp_tip": 101, "tcp_mine": "refused", "tcp_mine_branch": "refused",
                                       "tcp_submit_block": "refused", "socket": "permission denied"}
            assert node.tip() == tip

            # Modes opened up by mistake: nobody reaches the socket, and the server still refuses
            # it by its uid (SO_PEERCRED).
            os.chmod(node.chain_dir, 0o711)
            os.chmod(server.socket_path, 0o666)
            rc, out, err = await _run_as_nobody(*intruder)
            assert rc == 0, err
            assert json.loads(out) == {"tcp_tip": 101, "tcp_mine": "refused", "tcp_mine_branch": "refused",
                                       "tcp_submit_block": "refused", "socket_mine": "refused",
                                       "socket_mine_branch": "refused", "socket_submit_block": "refused",
                                       "socket_tip": 101}
            assert node.tip() == tip
            os.chmod(node.chain_dir, 0o700)

            # The CLI as nobody: a one-line error, no traceback, no block.
            rc, out, err = await _run_as_nobody(sys.executable, "-m", "eschaton", "chain", "mine", "3",
                                                "--datadir", str(shared_tmp))
            assert rc == 1 and err.count("\n") == 1 and "belongs to another user" in err, err
            assert node.tip() == tip

            # The owner's user, through the owner socket, can.
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "eschaton", "chain", "mine", "3", "--json", "--datadir", str(shared_tmp),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
            out_b, err_b = await asyncio.wait_for(p.communicate(), 120)
            assert p.returncode == 0, err_b.decode()
            assert json.loads(out_b)["height"] == 104 and node.tip().height == 104
        finally:
            await server.stop()
            node.close()

    asyncio.run(run())
