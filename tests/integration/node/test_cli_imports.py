"""A CLI command that asks the running node through its local API is a thin client: the process
imports neither libbitcoinkernel (``pbk``), aiohttp, embit, the crypto libraries nor the node's
chain, channel, network or daemon code. Each of those costs start-up time at every command,
seconds on a Pi Zero.

The commands run as real processes of the console script against a real node; the modules they
import are read from CPython's own import log (``PYTHONPROFILEIMPORTTIME``, the env form of
``-X importtime``), and the answers are checked too (a thin client that answers wrongly is no
use)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.node.harness import CLI_TIMEOUT, NodeProc, _env, eschaton_cmd, free_port

pytestmark = pytest.mark.timeout(180)

# A module, or any module inside the package, of these names must not be imported.
FORBIDDEN = ("pbk", "aiohttp", "embit", "coincurve", "nacl", "asyncio",
             "eschaton.chain", "eschaton.channel", "eschaton.core.channel", "eschaton.net",
             "eschaton.daemon", "eschaton.wallet")


def _run_traced(*argv: str, rc: int = 0) -> tuple[str, list[str], set[str]]:
    """``eschaton <argv> --json``, which must exit ``rc``: its stdout, its stderr lines other than
    the import log, and the names of every module it imported."""
    p = subprocess.run([*eschaton_cmd(), *argv, "--json"], capture_output=True, text=True,
                       env={**_env(), "PYTHONPROFILEIMPORTTIME": "1"}, timeout=CLI_TIMEOUT)
    modules: set[str] = set()
    other: list[str] = []
    for line in p.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                modules.add(name)
        else:
            other.append(line)
    assert p.returncode == rc, f"eschaton {' '.join(argv)} exited {p.returncode}: {other}"
    assert "eschaton.cli.main" in modules, "the import log is empty: the check would prove nothing"
    return p.stdout, other, modules


def _forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_node_api_commands_import_no_chain_channel_or_aiohttp(tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "solo", chain_dir=None)
    try:
        n.start().wait_ready()
        d = str(n.datadir)
        out, _, mods = _run_traced("node", "status", "--datadir", d)
        assert json.loads(out)["id"] == n.id, out
        assert _forbidden(mods) == [], "node status --datadir"
        out, _, mods = _run_traced("node", "status", "--config", str(n.config))
        assert json.loads(out)["id"] == n.id, out
        assert _forbidden(mods) == [], "node status --config"
        for argv in (("channel", "list", "--config", str(n.config)),
                     ("node", "health", "--config", str(n.config)),
                     ("peer", "list", "--datadir", d),
                     ("wallet", "balance", "--datadir", d),
                     ("wallet", "balance", "--config", str(n.config))):
            out, _, mods = _run_traced(*argv)
            assert json.loads(out) == n.api(f"{argv[0]}.{argv[1]}"), argv
            assert _forbidden(mods) == [], " ".join(argv)
        # A refusal by the node is one line and exit 1, through the same thin client.
        out, err, mods = _run_traced("microgrid", "status", "--config", str(n.config), rc=1)
        assert err == ["eschaton: ApiError: this node has no [microgrid] section"], err
        assert _forbidden(mods) == [], "microgrid status"
    finally:
        n.stop()


def test_thin_client_over_the_loopback_port(tmp_path: Path) -> None:
    """``[api] socket = ""`` with a ``tcp_port``: the CLI reaches the node over 127.0.0.1, still
    without the heavy modules."""
    n = NodeProc(tmp_path, "solo", chain_dir=None)
    port = free_port()
    n.config.write_text(n.config.read_text() + f'\n[api]\nsocket = ""\ntcp_port = {port}\n')
    try:
        n.start().wait_ready()
        out, _, mods = _run_traced("channel", "list", "--config", str(n.config))
        assert json.loads(out) == []
        assert _forbidden(mods) == []
    finally:
        n.stop()
