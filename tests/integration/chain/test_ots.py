"""The stock OpenTimestamps client (``opentimestamps-client`` 0.7.2) verifies a timestamp against
the embedded chain through our RPC (``getblockcount``, ``getblockhash``, ``getblockheader
[hash, false]``).

The proof is built here from the file's digest, committed in a coinbase's OP_RETURN: prepend
and append the rest of the coinbase, sha256 twice, and the result is the merkle root of a block
holding only that coinbase; the attestation names the block's height. The same proof attesting
a neighbouring block does not verify: the client really compares with the header it is served.
"""
from __future__ import annotations

import asyncio
import hashlib
import struct
import sys
from pathlib import Path

import pytest

from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.rpc.server import RpcServer
from eschaton.core.txcodec import Tx, compact_size, decode_block
from tests.conftest import need

pytestmark = pytest.mark.timeout(120)


def _stripped(tx: Tx) -> bytes:
    """The serialization the txid hashes (no witness)."""
    ins = b"".join(i.prev_txid + struct.pack("<I", i.prev_vout) + compact_size(len(i.script_sig)) + i.script_sig
                   + struct.pack("<I", i.sequence) for i in tx.inputs)
    outs = b"".join(struct.pack("<q", o.value) + compact_size(len(o.script_pubkey)) + o.script_pubkey
                    for o in tx.outputs)
    return (struct.pack("<i", tx.version) + compact_size(len(tx.inputs)) + ins + compact_size(len(tx.outputs))
            + outs + struct.pack("<I", tx.locktime))


def _proof(path: Path, digest: bytes, coinbase: Tx, merkle_root: bytes, height: int) -> Path:
    from opentimestamps.core.notary import BitcoinBlockHeaderAttestation
    from opentimestamps.core.op import OpAppend, OpPrepend, OpSHA256
    from opentimestamps.core.serialize import StreamSerializationContext
    from opentimestamps.core.timestamp import DetachedTimestampFile, Timestamp

    raw = _stripped(coinbase)
    i = raw.index(digest)
    ts = Timestamp(digest)
    leaf = ts.ops.add(OpPrepend(raw[:i])).ops.add(OpAppend(raw[i + 32:])).ops.add(OpSHA256()).ops.add(OpSHA256())
    assert leaf.msg == merkle_root
    leaf.attestations.add(BitcoinBlockHeaderAttestation(height))
    ots = path.with_name(path.name + ".ots")
    with ots.open("wb") as f:
        DetachedTimestampFile(OpSHA256(), ts).serialize(StreamSerializationContext(f))
    return ots


def test_ots_verifies_against_the_embedded_chain(tmp_path: Path) -> None:
    ots_exe = Path(sys.executable).with_name("ots")
    need(ots_exe.exists(), "needs the ots client (`make setup` installs opentimestamps-client from the dev extra)")

    async def run() -> None:
        node = ChainNode(tmp_path / "node")
        node.mine(3)
        doc = tmp_path / "ledger.txt"
        doc.write_bytes(b"the village's ledger\n")
        digest = hashlib.sha256(doc.read_bytes()).digest()
        node.mine(1, b"\x6a\x20" + digest)  # the coinbase commits to the digest
        assert node.index is not None
        raw = node.index.raw_block(4) or b""
        block = decode_block(raw)
        assert len(block.txs) == 1
        server = RpcServer(node, user="ots", password="pw")
        port = await server.start()
        try:
            async def verify(ots: Path) -> tuple[int, str]:
                p = await asyncio.create_subprocess_exec(
                    str(ots_exe), "--no-cache", "--btc-regtest", "--bitcoin-node", f"http://ots:pw@127.0.0.1:{port}/",
                    "verify", str(ots), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                out, _ = await asyncio.wait_for(p.communicate(), 60)
                assert p.returncode is not None
                return p.returncode, out.decode()

            rc, out = await verify(_proof(doc, digest, block.txs[0], raw[36:68], 4))
            assert rc == 0 and "Success! Bitcoin block 4 attests existence" in out, out
            rc, out = await verify(_proof(doc, digest, block.txs[0], raw[36:68], 3))
            assert rc != 0 and "Success" not in out, out
        finally:
            await server.stop()
            node.close()

    asyncio.run(run())
