"""Real ``eschaton node run`` processes for integration tests, driven through the CLI.

Every action a test takes goes through a subprocess ``eschaton ...`` (the way an operator drives
a node). Waiting for a state is a bounded poll: cheap in-process calls to the node's local API
(the same API the CLI uses), so that a wait does not cost a Python start-up per iteration.
The nodes' JSON log lines on stdout are collected and may be searched (``wait_log``).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from eschaton.api.client import call as api_call

CLI_TIMEOUT = 90.0


def eschaton_cmd() -> list[str]:
    """The installed console script, else ``python -m eschaton`` with the same interpreter."""
    script = Path(sys.executable).with_name("eschaton")
    return [str(script)] if script.exists() else [sys.executable, "-m", "eschaton"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[3]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "firmware"), str(root), env.get("PYTHONPATH", "")])
    env.pop("NOTIFY_SOCKET", None)
    env.pop("ESCHATON_DATADIR", None)
    return env


class CliError(AssertionError):
    def __init__(self, argv: Sequence[str], rc: int, out: str, err: str) -> None:
        super().__init__(f"eschaton {' '.join(argv)} exited {rc}: {err.strip() or out.strip()}")
        self.rc, self.out, self.err = rc, out, err


def run_cli(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*eschaton_cmd(), *argv], capture_output=True, text=True, env=_env(),
                       timeout=CLI_TIMEOUT)
    if check and p.returncode != 0:
        raise CliError(argv, p.returncode, p.stdout, p.stderr)
    return p


def cli_json(*argv: str) -> Any:
    return json.loads(run_cli(*argv, "--json").stdout)


def poll(fn: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.1) -> Any:
    """``fn()`` until it returns something truthy (that value is returned), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except Exception as e:  # e.g. the node is still starting: keep polling until the deadline
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(every)


class Chain:
    """The shared embedded chain directory (owned by whichever process opened it first)."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir

    def mine(self, n: int, to: str | None = None) -> int:
        args = ["chain", "mine", str(n), "--datadir", str(self.datadir)]
        if to is not None:
            args += ["--to", to]
        return int(cli_json(*args)["height"])

    def tx(self, txid: str) -> dict[str, Any]:
        return dict(cli_json("chain", "tx", txid, "--datadir", str(self.datadir)))

    def height(self) -> int:
        return int(cli_json("chain", "info", "--datadir", str(self.datadir))["height"])


class ChainServer:
    """``eschaton chain serve``: a chain owner independent of the nodes (so any node may be killed)."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.proc = subprocess.Popen([*eschaton_cmd(), "chain", "serve", "--datadir", str(datadir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "serving chain at height N on 127.0.0.1:PORT"
        if "serving chain" not in line:
            self.stop()
            raise AssertionError(f"chain serve did not start: {line!r}")

    def stop(self) -> None:
        _terminate(self.proc)


def _terminate(proc: subprocess.Popen[str], grace: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


class NodeProc:
    """One ``eschaton node run --config FILE`` process and its config."""

    def __init__(self, root: Path, name: str, *, chain_dir: Path | None, listen: Iterable[str] = (),
                 discovery_port: int | None = None, peers: Iterable[tuple[str, str]] = (),
                 discovery_interval: float = 0.5, api_outside: bool = False,
                 network: Iterable[str] = (), sections: Iterable[str] = ()) -> None:
        """``network``: more ``[network]`` lines, e.g. ``"max_links = 5"``; ``sections``: lines
        added at the end of the file, e.g. ``"[channel]", "turn_dwell_ms = 0"``."""
        self.name = name
        self.datadir = root / name
        self.config = root / f"{name}.toml"
        self.chain_dir = chain_dir
        self.id = ""
        self.proc: subprocess.Popen[str] | None = None
        self.logs: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self.cluster_nodes: list[NodeProc] = [self]  # whose logs a CLI failure prints
        lines = ["[node]", f'datadir = "{self.datadir}"', f'name = "{name}"', "", "[network]",
                 "listen = [" + ", ".join(f'"{u}"' for u in listen) + "]", *network, "",
                 "[network.discovery]"]
        if discovery_port is None:
            lines += ["enabled = false"]
        else:
            lines += ["enabled = true", f"port = {discovery_port}", f"interval = {discovery_interval}",
                      'broadcast = "127.255.255.255"']
        for pid, url in peers:
            lines += ["", "[[network.peers]]", f'id = "{pid}"', f'url = "{url}"']
        # api_outside: the API socket and token live next to the config, not in the datadir (a
        # datadir mounted in the node's own mount namespace is not visible to the test).
        self.api_paths = (root / f"{name}.sock", root / f"{name}.token") if api_outside else None
        if self.api_paths is not None:
            lines += ["", "[api]", f'socket = "{self.api_paths[0]}"', f'token_file = "{self.api_paths[1]}"']
        if chain_dir is not None:  # None: the default, the node's own chain in <datadir>/chain
            lines += ["", "[chain]", f'datadir = "{chain_dir}"', ""]
        lines += ["", *sections, ""]
        self.config.write_text("\n".join(lines))

    # --- process -----------------------------------------------------------------------------

    def start(self, env: dict[str, str] | None = None, wrap: Sequence[str] = ()) -> NodeProc:
        """``wrap``: a command that ends by exec'ing its arguments (e.g. ``unshare -m sh -c ...``)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.logs, self.stderr = [], []
        self.proc = subprocess.Popen([*wrap, *eschaton_cmd(), "node", "run", "--config", str(self.config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**_env(), **(env or {})})
        self._threads = [threading.Thread(target=self._read_out, args=(self.proc,), daemon=True),
                         threading.Thread(target=self._read_err, args=(self.proc,), daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _read_out(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = {"msg": line.rstrip(), "raw": True}
            self.logs.append(rec if isinstance(rec, dict) else {"msg": line.rstrip(), "raw": True})

    def _read_err(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr.append(line)

    def wait_ready(self, timeout: float = 60.0) -> str:
        rec = self.wait_log(lambda r: r.get("msg") == "node ready", "node ready", timeout)
        self.id = str(rec["id"])
        return self.id

    def wait_log(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0,
                 start: int = 0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for rec in self.logs[start:]:
                if pred(rec):
                    return rec
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode} before {what}: "
                                     f"{''.join(self.stderr)[-3000:]}")
            return None

        deadline = time.monotonic() + timeout
        while True:
            rec = found()
            if rec is not None:
                return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no log line for {what} within {timeout}s; "
                                     f"last lines: {self.logs[-10:]}; stderr: {''.join(self.stderr)[-2000:]}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM and wait (the clean stop path). Returns the exit code."""
        if self.proc is None:
            return None
        _terminate(self.proc)
        for t in self._threads:
            t.join(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye; what survives is what was durable."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        for t in self._threads:
            t.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    # --- driving it ----------------------------------------------------------------------------

    def cli(self, *argv: str) -> Any:
        """``eschaton <argv> --config <ours> --json``; a failure raises ``CliError`` carrying the
        tail of every node's log in the cluster (the cause is often on the peer), so that a
        failure in CI can be diagnosed from its output."""
        try:
            return cli_json(*argv, "--config", str(self.config))
        except CliError as e:
            tails = "".join(f"\n--- last log lines of {n.name} ---\n"
                            + "\n".join(json.dumps(r) for r in list(n.logs)[-40:])
                            for n in self.cluster_nodes)
            raise CliError(argv, e.rc, e.out, f"{e.err}{tails}") from None

    def cli_fail(self, *argv: str) -> subprocess.CompletedProcess[str]:
        p = run_cli(*argv, "--config", str(self.config), check=False)
        assert p.returncode != 0, f"eschaton {' '.join(argv)} unexpectedly succeeded: {p.stdout}"
        return p

    def wallet(self, *argv: str) -> Any:
        """``eschaton wallet ... --datadir <ours>`` (the wallet CLI finds the running node there)."""
        return cli_json("wallet", *argv, "--datadir", str(self.datadir))

    def api(self, name: str, **params: Any) -> Any:
        """The node's local API, in process (for polling)."""
        if self.api_paths is not None:
            return api_call(self.datadir, name, params, timeout=30.0, socket_path=self.api_paths[0],
                            token_path=self.api_paths[1])
        return api_call(self.datadir, name, params, timeout=30.0)

    def channel(self, cid: str) -> dict[str, Any] | None:
        for ch in self.api("channel.list"):
            if ch["channel"] == cid:
                return dict(ch)
        return None

    def linked(self) -> set[str]:
        return {p["id"] for p in self.api("peer.list") if p.get("linked")}

    def wallet_total(self) -> int:
        """Confirmed + unconfirmed + immature: coinbases maturing do not change it."""
        b = self.api("wallet.balance")
        return int(b["confirmed"]) + int(b["unconfirmed"]) + int(b["immature"])


class Cluster:
    """Nodes of one test; ``close()`` (a finaliser) stops every process started here."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.chain = Chain(root / "shared")
        self.nodes: list[NodeProc] = []
        self.servers: list[ChainServer] = []
        self.extra: list[subprocess.Popen[Any]] = []

    def node(self, name: str, **kw: Any) -> NodeProc:
        n = NodeProc(self.root, name, chain_dir=self.chain.datadir, **kw)
        self.nodes.append(n)
        n.cluster_nodes = self.nodes
        return n

    def serve_chain(self) -> ChainServer:
        s = ChainServer(self.chain.datadir)
        self.servers.append(s)
        return s

    def close(self) -> None:
        # Nodes first (they may be clients of a chain owned by a node or a server), owners last.
        for n in reversed(self.nodes):
            if n.running:
                n.stop()
        for s in self.servers:
            s.stop()
        for p in self.extra:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


# --- channel helpers shared by the tests ---------------------------------------------------------


def open_channel(chain: Chain, opener: NodeProc, acceptor: NodeProc, capacity: int,
                 *extra: str) -> str:
    """Open (CLI), wait for the funding broadcast, mine one block, wait until OPEN on both sides."""
    st = opener.cli("channel", "open", acceptor.id, str(capacity), *extra)
    assert st["state"] == "PROPOSED" and st["role"] == "opener", st
    cid = str(st["channel"])
    poll(lambda: (opener.channel(cid) or {}).get("state") == "FUNDING_BROADCAST",
         f"{opener.name}: funding of {cid[:12]} broadcast")
    chain.mine(1)
    for n in (opener, acceptor):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN", f"{n.name}: {cid[:12]} OPEN")
    return cid


def channel_pair(cluster: Cluster, capacity: int, *extra: str, serve: bool = False,
                 fixed_ports: bool = False, **node_kw: Any) -> tuple[NodeProc, NodeProc, str]:
    """Nodes a and b on loopback, linked by discovery, a funded, and a channel a->b OPEN.
    ``serve``: the chain is owned by a separate server process (nodes are its clients).
    ``fixed_ports``: each node listens on a port of its own that a restart keeps."""
    if serve:
        cluster.serve_chain()
    disc = free_port(socket.SOCK_DGRAM)
    a, b = (cluster.node(n, listen=[f"tcp://127.0.0.1:{free_port() if fixed_ports else 0}"],
                         discovery_port=disc, **node_kw) for n in "ab")
    for n in (a, b):
        n.start()
    for n in (a, b):
        n.wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    return a, b, open_channel(cluster.chain, a, b, capacity, *extra)


def mirrored(x: NodeProc, y: NodeProc, cid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both sides' views once they agree (same version, mirrored balances); asserts they do."""
    def agree() -> tuple[dict[str, Any], dict[str, Any]] | None:
        a, b = x.channel(cid), y.channel(cid)
        if a is None or b is None:
            return None
        same = (a["version"] == b["version"] and a["local_sat"] == b["remote_sat"]
                and a["remote_sat"] == b["local_sat"] and a["fee_sat"] == b["fee_sat"]
                and a["escrows"] == b["escrows"] and a["state"] == b["state"])
        return (a, b) if same else None

    return poll(agree, f"{x.name} and {y.name} to agree on {cid[:12]}")  # type: ignore[no-any-return]


def pay(payer: NodeProc, payee: NodeProc, cid: str, amount: int) -> None:
    """Pay through the CLI and check the exact effect on both sides."""
    before_payer, before_payee = mirrored(payer, payee, cid)
    st = payer.cli("channel", "pay", cid, str(amount))
    # A direction switch costs the switching payer one fee step; the payee gets exactly `amount`.
    fee_delta = st["fee_sat"] - before_payer["fee_sat"]
    assert fee_delta >= 0
    assert st["local_sat"] == before_payer["local_sat"] - amount - fee_delta, (before_payer, st)
    assert st["remote_sat"] == before_payee["local_sat"] + amount, (before_payee, st)
    assert st["version"] == before_payer["version"] + 1
    after_payer, after_payee = mirrored(payer, payee, cid)
    assert after_payer["version"] == st["version"]
    assert after_payee["local_sat"] == before_payee["local_sat"] + amount


def serve_rpc(cluster: Cluster) -> int:
    """Start ``eschaton chain serve --rpc-port 0`` on the cluster's chain; the port it serves."""
    shared = cluster.chain.datadir
    server = subprocess.Popen([*eschaton_cmd(), "chain", "serve", "--datadir", str(shared), "--rpc-port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    cluster.extra.append(server)
    assert server.stdout is not None
    line = server.stdout.readline()
    assert "JSON-RPC on 127.0.0.1:" in line, line
    return int(line.rsplit(":", 1)[1])


def linked_pair(cluster: Cluster, tmp_path: Path, chain_toml: str) -> tuple[NodeProc, NodeProc]:
    """Nodes a and b with ``chain_toml`` as their ``[chain]`` section (a remote backend), started,
    ready and linked over loopback TCP."""
    disc = free_port(socket.SOCK_DGRAM)
    nodes = []
    for name in "ab":
        n = NodeProc(tmp_path, name, chain_dir=None, listen=["tcp://127.0.0.1:0"], discovery_port=disc)
        with n.config.open("a") as f:
            f.write("\n[chain]\n" + chain_toml)
        cluster.nodes.append(n)
        n.cluster_nodes = cluster.nodes
        nodes.append(n)
    a, b = nodes
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
    return a, b


def close_and_check_payout(chain: Chain, closer: NodeProc, other: NodeProc, cid: str) -> None:
    """Close ``cid`` cooperatively, mine it, and check that each wallet gains exactly its close
    amount (its balance plus the fee steps it paid, which the close gives back)."""
    vc, vo = mirrored(closer, other, cid)
    tc, to = closer.wallet_total(), other.wallet_total()
    st = closer.cli("channel", "close", cid)
    assert st["state"] in ("CLOSING", "CLOSED"), st
    poll(lambda: (other.channel(cid) or {}).get("state") in ("CLOSING", "CLOSED"), f"{other.name} sees the close")
    chain.mine(1)
    for n in (closer, other):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "CLOSED", f"{n.name}: CLOSED")
    poll(lambda: closer.wallet_total() == tc + vc["close_sat"], f"{closer.name}'s wallet +{vc['close_sat']}")
    poll(lambda: other.wallet_total() == to + vo["close_sat"], f"{other.name}'s wallet +{vo['close_sat']}")
