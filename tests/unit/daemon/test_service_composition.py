"""The service seam (``eschaton.daemon.service``) and the node's declared services.

``Services`` is driven with small services written here (they record what is called on them),
and the node's own list is read from ``Node(config)`` without starting it: its commands are
the whole API table, each owned by exactly one service, and everything the CLI calls is in it.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from eschaton.api.registry import Command, CommandTable
from eschaton.config import parse_config
from eschaton.daemon.echo import EchoService
from eschaton.daemon.node import Node
from eschaton.daemon.service import (
    Health,
    Service,
    ServiceError,
    Services,
    ServiceStartError,
    State,
)
from eschaton.errors import LocalError
from eschaton.net.router import Router, ServiceRoutes

CLI = Path(__file__).resolve().parents[3] / "firmware" / "eschaton" / "cli"


class Recording:
    """A service that writes what happens to it into a shared list."""

    def __init__(self, name: str, log: list[str], *, fail: bool = False,
                 commands: Mapping[str, Command] | None = None) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.running = False
        self._commands = commands or {}

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail:
            raise LocalError(f"[{self.name}] cannot open its store")
        self.running = True

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        self.running = False

    def health(self) -> Health:
        return Health(State.OK if self.running else State.STOPPED, self.name)

    def commands(self) -> Mapping[str, Command]:
        return self._commands

    def routes(self) -> ServiceRoutes | None:
        return None


def test_services_start_in_the_declared_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    svcs = Services([Recording(n, log) for n in ("a", "b", "c")])
    assert all(isinstance(s, Service) for s in svcs.order)
    assert [h.state for h in svcs.health().values()] == [State.STOPPED] * 3
    asyncio.run(svcs.start())
    assert log == ["start a", "start b", "start c"]
    assert {n: h.state for n, h in svcs.health().items()} == {"a": State.OK, "b": State.OK, "c": State.OK}
    asyncio.run(svcs.stop())
    assert log[3:] == ["stop c", "stop b", "stop a"]
    assert svcs.started == ()


def test_a_failing_start_stops_the_earlier_ones_and_names_the_service() -> None:
    log: list[str] = []
    svcs = Services([Recording("a", log), Recording("b", log), Recording("c", log, fail=True),
                     Recording("d", log)])
    with pytest.raises(ServiceStartError) as ei:
        asyncio.run(svcs.start())
    # c never completed its start, d never began: only a and b are stopped, in reverse.
    assert log == ["start a", "start b", "start c", "stop b", "stop a"]
    assert ei.value.service == "c"
    assert str(ei.value) == "c: [c] cannot open its store"
    assert "\n" not in str(ei.value)
    assert isinstance(ei.value.__cause__, LocalError)
    assert svcs.started == ()


def test_a_stop_that_raises_does_not_keep_the_others_running() -> None:
    log: list[str] = []

    class Broken(Recording):
        async def stop(self) -> None:
            await super().stop()
            raise RuntimeError("flush failed")

    svcs = Services([Recording("a", log), Broken("b", log), Recording("c", log)])
    asyncio.run(svcs.start())
    asyncio.run(svcs.stop())
    assert log[3:] == ["stop c", "stop b", "stop a"]


def test_a_command_owned_by_two_services_is_refused() -> None:
    table = CommandTable()

    @table.command("x.do", "do it")
    async def do(node: object) -> None:
        return None

    log: list[str] = []
    with pytest.raises(ServiceError, match="x.do is owned by both a and b"):
        Services([Recording("a", log, commands=table), Recording("b", log, commands=table)])
    with pytest.raises(ServiceError, match="two services are named"):
        Services([Recording("a", log), Recording("a", log)])


def test_wire_rows_are_registered_once_their_service_started() -> None:
    router = Router()
    echo = EchoService()
    svcs = Services([echo], router)
    assert router.handler("echo_request") is None
    asyncio.run(svcs.start())
    assert router.handler("echo_request") is not None and "echo" in router.services


def _node(tmp_path: Path) -> Node:
    config = parse_config(f"""
[node]
datadir = "{tmp_path / 'n'}"
name = "n"
""", "n.toml")
    return Node(config)


def test_every_api_command_is_owned_by_exactly_one_service(tmp_path: Path) -> None:
    node = _node(tmp_path)
    svcs = node.services
    owners: dict[str, list[str]] = {}
    for svc in svcs.order:
        for name in svc.commands():
            owners.setdefault(name, []).append(svc.name)
    assert owners and all(len(o) == 1 for o in owners.values()), owners
    assert set(svcs.commands) == set(owners)
    assert svcs.owner["channel.pay"] == "channels" and svcs.owner["peer.echo"] == "echo"
    assert svcs.owner["microgrid.status"] == "microgrid" and svcs.owner["node.health"] == "api"
    # Every command a CLI module calls on the running node is served.
    called = set()
    for src in CLI.glob("*.py"):
        called |= set(re.findall(r'call\(\s*\w+\s*,\s*"([a-z_]+\.[a-z_.]+)"', src.read_text()))
    assert called and called <= set(svcs.commands), called - set(svcs.commands)


def test_the_node_declares_the_network_after_every_service_with_rows_and_the_api_last(tmp_path: Path) -> None:
    names = [s.name for s in _node(tmp_path).services.order]
    assert len(names) == len(set(names))
    for before in ("chain", "wallet", "channels", "metering", "bandwidth", "microgrid", "echo",
                   "dht"):
        assert names.index(before) < names.index("network"), names
    assert names[-1] == "api" and names[0] == "chain"
