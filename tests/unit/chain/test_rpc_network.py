"""The rpc backend refuses a chain server on another network than ``[chain] network``."""
from __future__ import annotations

import logging

import pytest

from eschaton.chain.errors import WrongNetwork
from eschaton.chain.rpc.client import check_network

URL = "http://127.0.0.1:8332"


@pytest.mark.parametrize(("network", "chain"), [
    ("mainnet", "main"), ("testnet", "test"), ("testnet", "testnet4"), ("signet", "signet"),
    ("regtest", "regtest"),
])
def test_the_same_network_is_accepted(network: str, chain: str) -> None:
    check_network(network, chain, URL)


@pytest.mark.parametrize(("network", "chain"), [
    ("mainnet", "test"), ("mainnet", "signet"), ("mainnet", "regtest"), ("mainnet", ""),
    ("signet", "main"), ("testnet", "signet"), ("regtest", "main"), ("regtest", "signet"),
])
def test_another_network_is_refused_in_one_line(network: str, chain: str) -> None:
    with pytest.raises(WrongNetwork) as e:
        check_network(network, chain, URL)
    msg = str(e.value)
    assert f"network = {network}" in msg and URL in msg and "\n" not in msg, msg


def test_a_public_test_network_accepts_a_private_regtest_chain_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_network("signet", "regtest", URL)
    assert "runs a regtest chain" in caplog.text
