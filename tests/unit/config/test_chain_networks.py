"""``[chain] network``: the embedded chain only on regtest, a public network through electrum or
rpc, mainnet only with the acknowledgement; each refusal one line naming file, key and line."""
from __future__ import annotations

import pytest

from eschaton.config import ConfigError, parse_config
from eschaton.config.chain import MAINNET_ACKNOWLEDGEMENT

HEAD = '[node]\ndatadir = "/tmp/x"\n[chain]\n'
ELECTRUM = 'backend = "electrum"\nurl = "tcp://127.0.0.1:50001"\n'
RPC = 'backend = "rpc"\nurl = "http://127.0.0.1:8332"\nrpc_cookie = "/tmp/x/.cookie"\n'


def _refused(body: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_config(HEAD + body, "node.toml")
    assert "\n" not in str(e.value) and str(e.value).startswith("node.toml:")
    return e.value


@pytest.mark.parametrize("name", ["signet", "testnet", "mainnet"])
def test_embedded_is_regtest_only(name: str) -> None:
    e = _refused(f'network = "{name}"\n')
    assert e.key == "chain.network" and e.line == 4
    assert "needs backend = \"electrum\" or \"rpc\"" in str(e)


def test_mainnet_needs_the_acknowledgement() -> None:
    e = _refused(ELECTRUM + 'network = "mainnet"\n')
    assert e.key == "chain.network" and e.line == 6 and MAINNET_ACKNOWLEDGEMENT in str(e)


@pytest.mark.parametrize("ack", ['"yes"', '"i understand this node moves real bitcoin"', "true"])
def test_the_acknowledgement_is_the_exact_string(ack: str) -> None:
    e = _refused(ELECTRUM + f'network = "mainnet"\nmainnet_risk_acknowledged = {ack}\n')
    assert e.key == "chain.mainnet_risk_acknowledged" and e.line == 7


@pytest.mark.parametrize("backend", [ELECTRUM, RPC])
@pytest.mark.parametrize("name", ["signet", "testnet", "mainnet"])
def test_public_networks_over_electrum_or_rpc(backend: str, name: str) -> None:
    ack = f'mainnet_risk_acknowledged = "{MAINNET_ACKNOWLEDGEMENT}"\n'
    cfg = parse_config(HEAD + backend + f'network = "{name}"\n' + ack, "node.toml")
    assert cfg.chain.network == name and cfg.chain.mainnet_risk_acknowledged


def test_regtest_unchanged() -> None:
    cfg = parse_config(HEAD, "node.toml")
    assert (cfg.chain.backend, cfg.chain.network, cfg.chain.mainnet_risk_acknowledged) == (
        "embedded", "regtest", False)
    assert parse_config(HEAD + ELECTRUM, "node.toml").chain.network == "regtest"
