"""Electrum protocol version negotiation: the highest version both sides speak, or a refusal."""
from __future__ import annotations

from typing import Any

import pytest

from eschaton.chain.electrum import versions as V


@pytest.mark.parametrize(("asked", "speak"), [
    ("1.4", "1.4"),                 # Electrum 4.3.4
    (["1.4", "1.6"], "1.6"),        # BDK (rust-electrum-client)
    (None, "1.4"),                  # the protocol's default
    (["1.2", "1.4.2"], "1.4.2"),
    (["1.4", "2.0"], "1.6"),        # a newer client: our highest
    (["1.4", "1.5"], "1.4.2"),      # 1.5 was never defined: the highest defined one below it
    ("1.4.0", "1.4"),
    (("1.4.1", "1.4.1"), "1.4.1"),
])
def test_negotiates_the_highest_common_version(asked: Any, speak: str) -> None:
    assert V.text(V.negotiate(asked)) == speak


@pytest.mark.parametrize("asked", ["1.3", ["1.0", "1.2"], "1.5", ["1.7", "2.0"], "2.0", "x", "1", 1.4, ["1.4"],
                                   ["1.4", "1.6", "1.7"], [None, "1.6"]])
def test_refuses_without_a_common_version_or_with_garbage(asked: Any) -> None:
    with pytest.raises(V.VersionRefused) as e:
        V.negotiate(asked)
    assert "\n" not in str(e.value)


def test_methods_by_version() -> None:
    v14, v142, v16 = (1, 4), (1, 4, 2), (1, 6)
    assert not V.has_method("blockchain.scripthash.unsubscribe", v14)
    assert V.has_method("blockchain.scripthash.unsubscribe", v142) and V.has_method("blockchain.scripthash.unsubscribe", v16)
    assert V.has_method("blockchain.relayfee", v142) and not V.has_method("blockchain.relayfee", v16)
    assert V.has_method("mempool.get_info", v16) and not V.has_method("mempool.get_info", v142)
    assert V.has_method("blockchain.scripthash.get_history", v14)
