from __future__ import annotations

from eschaton.core.channel.versions import close_balances
from tests.integration.channel.harness import Net


def test_open_pay_close(net: Net) -> None:
    net.open()
    for i in range(10):
        net.do("a" if i % 3 else "b", "pay", 10_000 + i) if i % 3 else None
    net.do("a", "pay", 50_000)
    net.do("b", "pay", 20_000)
    agreed = close_balances(net.ch("a").params, net.ch("a").current)  # the fee steps come back
    net.do("a", "close")
    net.mine(1)
    assert net.ch("a").state.name == "CLOSED" and net.ch("b").state.name == "CLOSED", debug(net)
    assert net.a.paid_to_payout() == agreed[0] and net.b.paid_to_payout() == agreed[1]


def debug(net: Net) -> str:
    return repr(net.a.watcher.results[-3:]) + repr(net.b.watcher.results[-3:])
