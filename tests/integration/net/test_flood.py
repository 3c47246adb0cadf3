"""Inbound admission under hostile traffic, with real ``python -m eschaton.net.mesh`` processes.

The node under attack prints its live counts (``--status-every``) while hundreds of idle,
garbage and stranger connections arrive from other loopback addresses; the caps must hold at
every sample, every connection it refused or timed out must be closed, its log must stay a few
lines without tracebacks, and a pinned peer must still link. A second run lowers the process's
file-descriptor limit below the caps so that ``accept`` fails with EMFILE.
"""
from __future__ import annotations

import asyncio
import resource
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eschaton.core.link.errors import LinkError
from eschaton.core.link.identity import NodeId, NodeKeys
from eschaton.net.identity import load_or_create_identity
from eschaton.net.session import dial
from tests.integration.net.flood import FloodStats, flood
from tests.integration.net.procs import NodeProcess
from tests.integration.node.harness import free_port

pytestmark = pytest.mark.timeout(180)

CAPS = {"max_pending_handshakes": 16, "max_pending_per_address": 4, "max_links": 5}


def _config(path: Path, datadir: Path, port: int, *, accept: str = "any",
            peers: tuple[tuple[NodeId, int], ...] = (), **caps: object) -> Path:
    lines = ["[node]", f'datadir = "{datadir}"', "", "[network]",
             f'listen = ["tcp://127.0.0.1:{port}"]', f'accept = "{accept}"',
             "handshake_timeout = 2.0"]
    lines += [f"{k} = {v}" for k, v in caps.items()]
    lines += ["", "[network.discovery]", "enabled = false"]
    for nid, p in peers:
        lines += ["", "[[network.peers]]", f'id = "{nid.hex()}"', f'url = "tcp://127.0.0.1:{p}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def _limit_fds(n: int) -> Callable[[], None]:
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return pre


class Started:
    def __init__(self) -> None:
        self.procs: list[NodeProcess] = []

    def run(self, config: Path, fds: int | None = None) -> NodeProcess:
        node = NodeProcess(config, args=["--status-every", "0.1"],
                           preexec_fn=_limit_fds(fds) if fds else None)
        self.procs.append(node)
        node.wait_for(event="started")
        return node


@pytest.fixture()
def started() -> Iterator[Started]:
    s = Started()
    try:
        yield s
    finally:
        for p in s.procs:
            p.stop()


def _statuses(node: NodeProcess) -> list[dict]:
    return [e for e in node.drain() if e.get("event") == "status"]


def test_caps_hold_refused_connections_close_and_logs_stay_small(tmp_path: Path,
                                                                   started: Started) -> None:
    port = free_port()
    ids = load_or_create_identity(tmp_path / "a").node_id
    a = started.run(_config(tmp_path / "a.toml", tmp_path / "a", port, **CAPS))

    async def strangers_then_flood() -> tuple[FloodStats, FloodStats]:
        first = asyncio.ensure_future(flood("127.0.0.1", port, ids, idle=0, garbage=0,
                                            strangers=20, hold=8.0))
        await asyncio.sleep(1.0)  # the strangers are in (or refused) before the flood fills slots
        return await first, await flood("127.0.0.1", port, ids, idle=200, garbage=100,
                                        strangers=20, hold=6.0)

    strange, stats = asyncio.run(strangers_then_flood())
    assert stats.opened > 100, stats
    samples = _statuses(a)
    assert samples
    assert max(s["pending"] for s in samples) <= CAPS["max_pending_handshakes"]
    assert max(s["links"] for s in samples) <= CAPS["max_links"]
    assert max(s["live_sessions"] for s in samples) <= CAPS["max_pending_handshakes"] + CAPS["max_links"]
    # Every connection the node accepted and did not link was closed by it (refused at once, or
    # at the 2 s handshake deadline: we held each one for 6 s).
    assert stats.closed_by_node == stats.opened, stats
    assert 0 < strange.strangers_linked <= CAPS["max_links"], strange
    assert stats.strangers_linked == 0, stats  # the slots were still taken
    last = samples[-1]
    assert last["refused"]["pending_full"] + last["refused"]["source_full"] > 0, last
    assert sum(last["refused"].values()) >= 20 - strange.strangers_linked, last
    text = "".join(a.stderr)
    assert "Traceback" not in text, text[-3000:]
    assert len(a.stderr) <= 20, text[-3000:]


def test_accept_known_refuses_strangers_and_admits_pinned(tmp_path: Path, started: Started) -> None:
    pa, pb = free_port(), free_port()
    ida = load_or_create_identity(tmp_path / "a").node_id
    idb = load_or_create_identity(tmp_path / "b").node_id
    a = started.run(_config(tmp_path / "a.toml", tmp_path / "a", pa, accept="known",
                            peers=((idb, pb),)))
    stranger = NodeKeys.generate(secrets.token_bytes)

    async def try_stranger() -> BaseException | None:
        try:
            s, task = await dial(f"tcp://127.0.0.1:{pa}", stranger, ida, timeout=5.0)
        except LinkError as e:  # the node answers "not authorised" (or just closes)
            return e
        task.cancel()
        return None

    err = asyncio.run(try_stranger())
    assert err is not None, "a stranger linked to a node that accepts known peers only"
    assert "not authorised" in str(err), err
    b = started.run(_config(tmp_path / "b.toml", tmp_path / "b", pb, peers=((ida, pa),)))
    a.wait_for(timeout=20.0, event="link_open", id=idb.hex())
    b.wait_for(timeout=20.0, event="link_open", id=ida.hex())
    after = a.wait_for(timeout=5.0, event="status", peers=1)  # only b: nothing kept for the stranger
    assert after["refused"]["unknown_key"] >= 1
    assert after["links"] == 0  # b is pinned: it takes no stranger's slot
    assert not [e for e in a.seen if e.get("event") == "link_open" and e["id"] == stranger.node_id.hex()]


def test_out_of_file_descriptors_no_tracebacks_and_recovers(tmp_path: Path, started: Started) -> None:
    pa, pb = free_port(), free_port()
    ida = load_or_create_identity(tmp_path / "a").node_id
    idb = load_or_create_identity(tmp_path / "b").node_id
    # 40 descriptors for a node whose caps allow 64 pending handshakes: accept hits EMFILE.
    a = started.run(_config(tmp_path / "a.toml", tmp_path / "a", pa,
                            peers=((idb, pb),)), fds=40)
    stats = asyncio.run(flood("127.0.0.1", pa, ida, idle=300, garbage=0, strangers=0, hold=4.0))
    assert stats.opened > 40, stats
    text = "".join(a.stderr)
    assert "Traceback" not in text, text[-3000:]
    assert "Too many open files" in text  # the condition is reported, once per interval
    assert len(a.stderr) <= 20, text[-3000:]
    # The node is still there for its friends once the flood is over.
    b = started.run(_config(tmp_path / "b.toml", tmp_path / "b", pb, peers=((ida, pa),)))
    a.wait_for(timeout=30.0, event="link_open", id=idb.hex())
    b.wait_for(timeout=30.0, event="link_open", id=ida.hex())
