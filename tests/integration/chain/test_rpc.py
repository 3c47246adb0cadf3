"""The bitcoind-compatible JSON-RPC over a real embedded chain, spoken to over real HTTP.

Shapes: every method's reply has the field names and JSON types of Bitcoin Core 31's RPC help
(the tables below are written from that help, not from our code). Errors: Core's codes for not
found (-5), bad parameters (-8, -3, -1), unknown methods (-32601) and refused transactions
(-22, -25, -26, -27). Authentication: no or wrong credentials are HTTP 401; the cookie
(``chain/.cookie``, 0600) and configured user/password work. Batches and JSON-RPC 1.0/2.0
reply shapes. Only the owner's uid may ``generatetoaddress``: another local user holding the
password is refused and the tip stays.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.rpc.server import RpcServer
from eschaton.core.script import script_to_address
from eschaton.core.txcodec import decode_block
from tests.conftest import need_root, need_tool
from tests.unit.chain.helpers import Key, spend_p2wpkh

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[3]
FEE = 2_000
NUM = (int, float)

# Bitcoin Core 31 RPC help: field -> JSON type (``NUM`` for "numeric" amounts and fee rates).
NETWORKINFO = {"version": int, "subversion": str, "protocolversion": int, "localservices": str,
               "localservicesnames": list, "localrelay": bool, "timeoffset": int, "networkactive": bool,
               "connections": int, "connections_in": int, "connections_out": int, "networks": list,
               "relayfee": NUM, "incrementalfee": NUM, "localaddresses": list, "warnings": list}
BLOCKCHAININFO = {"chain": str, "blocks": int, "headers": int, "bestblockhash": str, "bits": str, "target": str,
                  "difficulty": NUM, "time": int, "mediantime": int, "verificationprogress": NUM,
                  "initialblockdownload": bool, "chainwork": str, "size_on_disk": int, "pruned": bool,
                  "warnings": list}
HEADER = {"hash": str, "confirmations": int, "height": int, "version": int, "versionHex": str,
          "merkleroot": str, "time": int, "mediantime": int, "nonce": int, "bits": str, "target": str,
          "difficulty": NUM, "chainwork": str, "nTx": int, "previousblockhash": str}
BLOCK1 = {**HEADER, "strippedsize": int, "size": int, "weight": int, "tx": list}
TX = {"txid": str, "hash": str, "version": int, "size": int, "vsize": int, "weight": int, "locktime": int,
      "vin": list, "vout": list}
RAWTX_CONFIRMED = {**TX, "hex": str, "blockhash": str, "confirmations": int, "time": int, "blocktime": int}
MEMPOOLENTRY = {"vsize": int, "weight": int, "time": int, "height": int, "descendantcount": int,
                "descendantsize": int, "ancestorcount": int, "ancestorsize": int, "wtxid": str, "fees": dict,
                "depends": list, "spentby": list, "bip125-replaceable": bool, "unbroadcast": bool}
MEMPOOLINFO = {"loaded": bool, "size": int, "bytes": int, "usage": int, "total_fee": NUM, "maxmempool": int,
               "mempoolminfee": NUM, "minrelaytxfee": NUM, "incrementalrelayfee": NUM, "unbroadcastcount": int,
               "fullrbf": bool}
TXOUT = {"bestblock": str, "confirmations": int, "value": NUM, "scriptPubKey": dict, "coinbase": bool}
TESTACCEPT_OK = {"txid": str, "wtxid": str, "allowed": bool, "vsize": int, "fees": dict}


def has_shape(obj: Any, shape: dict[str, Any]) -> None:
    assert isinstance(obj, dict), obj
    for key, typ in shape.items():
        assert key in obj, f"missing {key} in {sorted(obj)}"
        assert isinstance(obj[key], typ) and not (typ is int and isinstance(obj[key], bool)), (key, obj[key])


class Rpc:
    """A bare HTTP JSON-RPC caller (what ElectrumX or bitcoin-cli send)."""

    def __init__(self, session: aiohttp.ClientSession, port: int, cred: str) -> None:
        self.session, self.port, self.cred = session, port, cred

    async def post(self, payload: Any, cred: str | None = None) -> tuple[int, str, Any]:
        headers = {}
        c = self.cred if cred is None else cred
        if c:
            headers["Authorization"] = "Basic " + base64.b64encode(c.encode()).decode()
        async with self.session.post(f"http://127.0.0.1:{self.port}/", data=json.dumps(payload),
                                     headers=headers) as r:
            body = await r.read()
            return r.status, r.headers.get("Content-Type", ""), json.loads(body) if body else None

    async def reply(self, method: str, *params: Any) -> dict[str, Any]:
        status, ctype, body = await self.post({"method": method, "params": list(params), "id": 7})
        assert ctype == "application/json", ctype
        assert "error" in body and "result" in body and body["id"] == 7, body
        return dict(body)

    async def __call__(self, method: str, *params: Any) -> Any:
        body = await self.reply(method, *params)
        assert body["error"] is None, body
        return body["result"]

    async def error(self, method: str, *params: Any) -> tuple[int, str]:
        body = await self.reply(method, *params)
        assert body["result"] is None and body["error"] is not None, body
        return body["error"]["code"], body["error"]["message"]


@asynccontextmanager
async def served(datadir: Path, **kw: Any) -> AsyncIterator[tuple[ChainNode, RpcServer, Rpc]]:
    node = ChainNode(datadir)
    node.mine(101, Key(1).p2wpkh)
    server = RpcServer(node, **kw)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield node, server, Rpc(session, port, (node.chain_dir / ".cookie").read_text())
    finally:
        await server.stop()
        node.close()


def _coinbase(node: ChainNode, height: int) -> tuple[str, int]:
    assert node.index is not None
    raw = node.index.raw_block(height)
    assert raw is not None
    tx = decode_block(raw).txs[0]
    return tx.txid, tx.outputs[0].value


def test_methods_have_cores_shapes(tmp_path: Path) -> None:
    async def run() -> None:
        async with served(tmp_path) as (node, _server, rpc):
            k = Key(1)
            has_shape(await rpc("getnetworkinfo"), NETWORKINFO)
            assert (await rpc("getnetworkinfo"))["version"] >= 310000  # what ElectrumX 2.0 demands
            idx = await rpc("getindexinfo")
            assert set(idx) == {"txindex", "txospenderindex"} and idx["txindex"] == {"synced": True,
                                                                                    "best_block_height": 101}
            assert await rpc("getindexinfo", "txindex") == {"txindex": idx["txindex"]}
            assert await rpc("getindexinfo", "coinstatsindex") == {}
            assert await rpc("getblockcount") == 101
            best = await rpc("getbestblockhash")
            assert best == node.tip().block_hash
            info = await rpc("getblockchaininfo")
            has_shape(info, BLOCKCHAININFO)
            assert (info["chain"], info["blocks"], info["bestblockhash"]) == ("regtest", 101, best)
            assert info["mediantime"] == node.tip().median_time_past
            assert int(info["chainwork"], 16) == 2 * 102  # regtest: each block is worth 2 hashes

            h5 = await rpc("getblockhash", 5)
            hdr = await rpc("getblockheader", h5)
            has_shape(hdr, HEADER)
            assert (hdr["height"], hdr["confirmations"], hdr["nextblockhash"]) == (5, 97, await rpc("getblockhash", 6))
            raw_hdr = await rpc("getblockheader", h5, False)
            assert isinstance(raw_hdr, str) and len(raw_hdr) == 160
            raw_block = await rpc("getblock", h5, 0)
            assert raw_block[:160] == raw_hdr and decode_block(bytes.fromhex(raw_block)).header.hash == h5
            b1 = await rpc("getblock", h5, 1)
            has_shape(b1, BLOCK1)
            assert len(b1["tx"]) == 1 and all(isinstance(t, str) for t in b1["tx"])
            assert b1["size"] == len(raw_block) // 2
            b2 = await rpc("getblock", h5, 2)
            has_shape(b2["tx"][0], TX)
            assert "coinbase" in b2["tx"][0]["vin"][0]
            assert "nextblockhash" not in await rpc("getblockheader", best)

            # A wallet transaction: mempool shapes, then confirmed shapes.
            txid1, value = _coinbase(node, 1)
            dest = Key(2).p2wpkh
            raw = spend_p2wpkh(txid1, 0, value, k, [(value - FEE, dest)])
            accept = await rpc("testmempoolaccept", [raw.hex()])
            has_shape(accept[0], TESTACCEPT_OK)
            assert accept[0]["allowed"] is True and accept[0]["fees"]["base"] == FEE / 1e8
            assert await rpc("getrawmempool") == []  # a test does not accept
            txid = await rpc("sendrawtransaction", raw.hex())
            assert await rpc("getrawmempool") == [txid]
            entry = await rpc("getmempoolentry", txid)
            has_shape(entry, MEMPOOLENTRY)
            assert entry["fees"]["base"] == FEE / 1e8 and entry["height"] == 101
            assert (await rpc("getrawmempool", True))[txid] == entry
            mi = await rpc("getmempoolinfo")
            has_shape(mi, MEMPOOLINFO)
            assert mi["size"] == 1 and mi["total_fee"] == FEE / 1e8
            out = await rpc("gettxout", txid, 0)
            has_shape(out, TXOUT)
            assert out["confirmations"] == 0 and out["scriptPubKey"]["hex"] == dest.hex()
            assert out["scriptPubKey"]["address"] == script_to_address(dest)
            assert await rpc("gettxout", txid1, 0) is None  # spent in the mempool
            assert (await rpc("gettxout", txid1, 0, False))["confirmations"] == 101
            sp = await rpc("gettxspendingprevout", [{"txid": txid1, "vout": 0}, {"txid": txid, "vout": 0}])
            assert sp == [{"txid": txid1, "vout": 0, "spendingtxid": txid}, {"txid": txid, "vout": 0}]
            mem_tx = await rpc("getrawtransaction", txid, 1)
            has_shape(mem_tx, {**TX, "hex": str})
            assert "blockhash" not in mem_tx and mem_tx["vout"][0]["value"] == (value - FEE) / 1e8

            [bh] = await rpc("generatetoaddress", 1, script_to_address(Key(3).p2wpkh))
            rtx = await rpc("getrawtransaction", txid, 1)
            has_shape(rtx, RAWTX_CONFIRMED)
            assert (rtx["blockhash"], rtx["confirmations"]) == (bh, 1)
            assert "in_active_chain" not in rtx
            assert (await rpc("getrawtransaction", txid, 1, bh))["in_active_chain"] is True
            assert await rpc("getrawtransaction", txid, 0) == raw.hex()
            assert (await rpc("getrawtransaction", txid, 2))["fee"] == FEE / 1e8
            assert (await rpc("getblock", bh, 2))["tx"][1]["fee"] == FEE / 1e8
            prevout = (await rpc("getblock", bh, 3))["tx"][1]["vin"][0]["prevout"]
            assert prevout["value"] == value / 1e8 and prevout["generated"] is True and prevout["height"] == 1
            sp = await rpc("gettxspendingprevout", [{"txid": txid1, "vout": 0}], {"return_spending_tx": True})
            assert sp == [{"txid": txid1, "vout": 0, "spendingtxid": txid, "blockhash": bh, "spendingtx": raw.hex()}]
            assert await rpc("gettxspendingprevout", [{"txid": txid1, "vout": 0}], {"mempool_only": True}) == \
                [{"txid": txid1, "vout": 0}]
            fee = await rpc("estimatesmartfee", 6)
            assert fee == {"feerate": 0.00001, "blocks": 6}
            scan = await rpc("scantxoutset", "start", [f"raw({dest.hex()})"])
            assert [(u["txid"], u["vout"], u["height"]) for u in scan["unspents"]] == [(txid, 0, 102)]
            assert scan["total_amount"] == (value - FEE) / 1e8

            # A package: parent and child.
            txid2, value2 = _coinbase(node, 2)
            parent = spend_p2wpkh(txid2, 0, value2, k, [(value2 - FEE, k.p2wpkh)])
            from eschaton.core.txcodec import decode_tx

            ptx = decode_tx(parent)
            child = spend_p2wpkh(ptx.txid, 0, value2 - FEE, k, [(value2 - 2 * FEE, dest)])
            pkg = await rpc("submitpackage", [parent.hex(), child.hex()])
            assert pkg["package_msg"] == "success" and pkg["replaced-transactions"] == []
            assert set(pkg["tx-results"]) == {ptx.wtxid, decode_tx(child).wtxid}
            assert set(await rpc("getrawmempool")) == {ptx.txid, decode_tx(child).txid}
            entry = await rpc("getmempoolentry", ptx.txid)
            assert entry["descendantcount"] == 2 and entry["spentby"] == [decode_tx(child).txid]

    asyncio.run(run())


def test_errors_have_cores_codes(tmp_path: Path) -> None:
    async def run() -> None:
        async with served(tmp_path) as (node, _server, rpc):
            k = Key(1)
            zero = "00" * 32
            status, ctype, body = await rpc.post({"method": "getwalletinfo", "params": [], "id": 1})
            assert (status, ctype, body["error"]["code"]) == (404, "application/json", -32601)
            assert (await rpc.error("getblockhash", 500))[0] == -8
            assert (await rpc.error("getblockhash", "5"))[0] == -3
            assert (await rpc.error("getblockhash"))[0] == -1
            assert (await rpc.error("getblock", zero)) == (-5, "Block not found")
            assert (await rpc.error("getblock", "abc"))[0] == -8
            assert (await rpc.error("getblockheader", zero))[0] == -5
            assert (await rpc.error("getrawtransaction", zero))[0] == -5
            assert (await rpc.error("getrawtransaction", zero, 1, await rpc("getblockhash", 1)))[0] == -5
            assert (await rpc.error("getmempoolentry", zero)) == (-5, "Transaction not in mempool")
            assert (await rpc.error("estimatesmartfee", 0))[0] == -8
            # Named parameters (an object), as bitcoin-cli -named sends them.
            _, _, body = await rpc.post({"method": "getblockhash", "params": {"height": 5}, "id": 2})
            assert body["result"] == node.index.block_at(5).hash  # type: ignore[union-attr]
            _, _, body = await rpc.post({"method": "getblockhash", "params": {"hieght": 5}, "id": 2})
            assert body["error"]["code"] == -8

            # Refused transactions, with bitcoind's reason first.
            assert (await rpc.error("sendrawtransaction", "zz"))[0] == -22
            assert (await rpc.error("sendrawtransaction", "0100"))[0] == -22
            txid1, value = _coinbase(node, 1)
            missing = spend_p2wpkh(zero, 0, value, k, [(value - FEE, k.p2wpkh)])
            assert await rpc.error("sendrawtransaction", missing.hex()) == (-25, "bad-txns-inputs-missingorspent")
            nonfinal = spend_p2wpkh(txid1, 0, value, k, [(value - FEE, k.p2wpkh)], locktime=500)
            code, msg = await rpc.error("sendrawtransaction", nonfinal.hex())
            assert code == -26 and msg.startswith("non-final"), msg
            cheap = spend_p2wpkh(txid1, 0, value, k, [(value - 1, k.p2wpkh)])
            code, msg = await rpc.error("sendrawtransaction", cheap.hex())
            assert code == -26 and msg.startswith("min relay fee not met, "), msg
            greedy = spend_p2wpkh(txid1, 0, value, k, [(value // 2, k.p2wpkh)])
            assert (await rpc.error("sendrawtransaction", greedy.hex()))[0] == -25  # above maxfeerate
            ok = spend_p2wpkh(txid1, 0, value, k, [(value - FEE, k.p2wpkh)])
            txid = await rpc("sendrawtransaction", ok.hex())
            assert await rpc("sendrawtransaction", ok.hex()) == txid  # again: not an error, as bitcoind
            refused = await rpc("testmempoolaccept", [cheap.hex()])
            assert refused[0]["allowed"] is False and refused[0]["reject-reason"] == "min relay fee not met"
            node.mine(1)
            assert (await rpc.error("sendrawtransaction", ok.hex()))[0] == -27
            assert (await rpc.error("generatetoaddress", 1, "not-an-address")) == (-5, "Error: Invalid address")
            assert (await rpc.error("generatetoaddress", 0, script_to_address(k.p2wpkh)))[0] == -8

    asyncio.run(run())


def test_authentication_and_batches(tmp_path: Path) -> None:
    async def run() -> None:
        async with served(tmp_path, user="electrumx", password="s3cret") as (node, server, rpc):
            cookie = node.chain_dir / ".cookie"
            assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
            assert cookie.read_text().startswith("__cookie__:") and len(cookie.read_text()) == 11 + 64
            assert (node.chain_dir / "rpc.port").read_text().strip() == str(rpc.port)
            req = {"method": "getblockcount", "params": [], "id": 1}
            for cred in ("", "electrumx:wrong", "__cookie__:" + "0" * 64, "electrumx"):
                status, _, body = await rpc.post(req, cred=cred)
                assert (status, body) == (401, None), cred
            for cred in ("electrumx:s3cret", cookie.read_text()):
                status, ctype, body = await rpc.post(req, cred=cred)
                assert (status, ctype, body) == (200, "application/json", {"result": 101, "error": None, "id": 1})

            # A 1.0 batch: every reply has result and error, in order, HTTP 200.
            status, ctype, body = await rpc.post([
                {"method": "getblockcount", "params": [], "id": "a"},
                {"method": "nosuchmethod", "params": [], "id": "b"},
                {"method": "getblockhash", "params": [0], "id": "c"},
                {"method": "getblockhash", "params": [999], "id": "d"},
            ])
            assert status == 200 and ctype == "application/json"
            assert [r["id"] for r in body] == ["a", "b", "c", "d"]
            assert body[0] == {"result": 101, "error": None, "id": "a"}
            assert body[1]["result"] is None and body[1]["error"]["code"] == -32601
            assert body[2]["error"] is None and body[2]["result"] == node.index.block_at(0).hash  # type: ignore[union-attr]
            assert body[3]["error"]["code"] == -8
            # JSON-RPC 2.0: exactly one of result/error; a notification gets no reply.
            status, _, body = await rpc.post({"jsonrpc": "2.0", "method": "getblockcount", "id": 3})
            assert (status, body) == (200, {"jsonrpc": "2.0", "result": 101, "id": 3})
            status, _, body = await rpc.post({"jsonrpc": "2.0", "method": "nosuchmethod", "id": 4})
            assert status == 200 and body["error"]["code"] == -32601 and "result" not in body
            status, _, body = await rpc.post({"jsonrpc": "2.0", "method": "getblockcount"})
            assert (status, body) == (204, None)
            status, _, body = await rpc.post([{"jsonrpc": "2.0", "method": "getblockcount"},
                                              {"jsonrpc": "2.0", "method": "getblockcount", "id": 9}])
            assert body == [{"jsonrpc": "2.0", "result": 101, "id": 9}]
            # Not JSON: Core's parse error.
            async with rpc.session.post(f"http://127.0.0.1:{rpc.port}/", data=b"{nope",
                                        headers={"Authorization": "Basic " + base64.b64encode(
                                            cookie.read_text().encode()).decode()}) as r:
                assert r.status == 500 and (await r.json())["error"]["code"] == -32700
        assert not cookie.exists() and not (node.chain_dir / "rpc.port").exists()

    asyncio.run(run())


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A directory ``nobody`` can traverse (pytest's tmp_path is 0700 root's)."""
    d = Path(tempfile.mkdtemp(prefix=f"eschaton-rpc-{os.getpid()}-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


_INTRUDER = r"""
import base64, json, sys, urllib.request
port, cred, address = sys.argv[1], sys.argv[2], sys.argv[3]
def call(method, *params):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(
        {"method": method, "params": list(params), "id": 1}).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()})
    try:
        with urllib.request.urlopen(req) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)
print(json.dumps({"count": call("getblockcount"), "generate": call("generatetoaddress", 2, address)}))
"""


def test_only_the_owner_may_generate(shared_tmp: Path) -> None:
    need_root()
    setpriv = need_tool("setpriv")

    async def run() -> None:
        async with served(shared_tmp, user="indexer", password="pw") as (node, _server, rpc):
            address = script_to_address(Key(3).p2wpkh)
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            p = await asyncio.create_subprocess_exec(
                setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-I", "-c",
                _INTRUDER, str(rpc.port), "indexer:pw", address,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            out, err = await asyncio.wait_for(p.communicate(), 60)
            assert p.returncode == 0, err.decode()
            got = json.loads(out)
            # Another user with the password reads; it may not make blocks.
            assert got["count"] == {"result": 101, "error": None, "id": 1}
            assert got["generate"]["result"] is None and got["generate"]["error"]["code"] == -1
            assert "only the chain's owner" in got["generate"]["error"]["message"]
            assert node.tip().height == 101
            # The owner's user (this process) may, with the same password.
            rpc.cred = "indexer:pw"
            assert len(await rpc("generatetoaddress", 2, address)) == 2 and node.tip().height == 103

    asyncio.run(run())


def test_chain_serve_rpc_port_taken_is_one_line(tmp_path: Path) -> None:
    """``eschaton chain serve --rpc-port`` on a port already taken: a one-line error, exit 1, and
    nothing left behind (no Electrum socket or port file, no cookie)."""
    import socket
    import subprocess

    from tests.integration.node.harness import _env, eschaton_cmd

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([*eschaton_cmd(), "chain", "serve", "--datadir", str(tmp_path), "--rpc-port", str(port)],
                           capture_output=True, text=True, env=_env(), timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert f"cannot serve the chain's RPC on 127.0.0.1:{port}" in p.stderr and "Traceback" not in p.stderr
    assert sorted(f.name for f in (tmp_path / "chain").iterdir()) == ["LOCK", "index.sqlite", "kernel"]
