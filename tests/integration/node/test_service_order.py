"""A real ``eschaton node run`` starts its services in the declared order and stops them in
reverse, ``node health`` lists them in that order, and a service that cannot start (the API's
port is taken) stops the ones already started and ends the process with one line."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from eschaton.config import load_config
from eschaton.daemon.node import Node
from tests.integration.node.harness import NodeProc

pytestmark = pytest.mark.timeout(120)


def _declared(n: NodeProc) -> list[str]:
    """The order the composition root declares for this very config (not started)."""
    return [s.name for s in Node(load_config(str(n.config))).services.order]


def _services(n: NodeProc, msg: str) -> list[str]:
    return [str(r["service"]) for r in n.logs if r.get("msg") == msg]


def test_services_start_in_order_stop_in_reverse_and_show_their_health(tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "a", chain_dir=None, listen=["tcp://127.0.0.1:0"])
    order = _declared(n)
    n.start()
    try:
        n.wait_ready()
        assert _services(n, "service started") == order
        health: list[dict[str, Any]] = n.cli("node", "health")
        assert [h["service"] for h in health] == order
        by = {h["service"]: h for h in health}
        # Configured parts are up; the ones this config does not ask for say so.
        for name in ("chain", "wallet", "channels", "echo", "network", "api"):
            assert by[name]["state"] == "ok", by[name]
        for name in ("metering", "bandwidth", "microgrid"):
            assert by[name] == {"service": name, "state": "off", "detail": "not configured"}
        assert "1 listeners" in by["network"]["detail"] and "height 0" in by["chain"]["detail"]
    finally:
        rc = n.stop()
    assert rc == 0
    assert _services(n, "service stopped") == order[::-1]


def test_a_service_failing_to_start_stops_the_earlier_ones_and_the_node_exits_with_one_line(
        tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "a", chain_dir=None, listen=["tcp://127.0.0.1:0"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        n.config.write_text(n.config.read_text() + f"\n[api]\ntcp_port = {port}\n")
        order = _declared(n)
        n.start()
        assert n.proc is not None
        n.proc.wait(60)
        n.stop()
    assert n.proc.returncode == 1
    lines = "".join(n.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in "".join(n.stderr), n.stderr
    assert lines[0].startswith("eschaton: node failed to start: [api] tcp_port: cannot listen on "
                               f"127.0.0.1:{port}"), lines[0]
    failed = [r for r in n.logs if r.get("msg") == "service failed to start"]
    assert [r["service"] for r in failed] == ["api"]
    before = order[:order.index("api")]
    assert _services(n, "service started") == before
    assert _services(n, "service stopped") == before[::-1]
    assert not any(r.get("msg") == "node ready" for r in n.logs)
