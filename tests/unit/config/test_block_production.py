"""``[chain] block_interval_s`` / ``block_after_tx_s``: numbers of seconds (0 = off), only on an
embedded regtest chain; every refusal is one line naming file, key and line."""
from __future__ import annotations

import pytest

from eschaton.config import ConfigError, parse_config

HEAD = '[node]\ndatadir = "/tmp/x"\n[chain]\n'
ELECTRUM = 'backend = "electrum"\nurl = "tcp://127.0.0.1:50001"\n'
RPC = 'backend = "rpc"\nurl = "http://127.0.0.1:8332"\nrpc_cookie = "/tmp/x/.cookie"\n'
KEYS = ("block_interval_s", "block_after_tx_s")


def _refused(body: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_config(HEAD + body, "node.toml")
    assert "\n" not in str(e.value) and str(e.value).startswith("node.toml:")
    return e.value


def test_off_by_default() -> None:
    cc = parse_config(HEAD, "node.toml").chain
    assert (cc.block_interval_s, cc.block_after_tx_s) == (0.0, 0.0)


def test_read_on_a_village_chain() -> None:
    cc = parse_config(HEAD + "block_interval_s = 600\nblock_after_tx_s = 2.5\n", "node.toml").chain
    assert (cc.block_interval_s, cc.block_after_tx_s) == (600.0, 2.5)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("backend", [ELECTRUM, RPC])
def test_refused_on_a_chain_this_node_does_not_own(key: str, backend: str) -> None:
    e = _refused(backend + f"{key} = 5\n")
    assert e.key == f"chain.{key}" and e.line == 4 + backend.count("\n")
    assert "only the owner of an embedded chain makes blocks" in str(e)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("name", ["signet", "testnet"])
def test_refused_on_a_public_network(key: str, name: str) -> None:
    e = _refused(ELECTRUM + f'network = "{name}"\n{key} = 5\n')
    assert e.key == f"chain.{key}"


@pytest.mark.parametrize("key", KEYS)
def test_zero_is_off_anywhere(key: str) -> None:
    cc = parse_config(HEAD + ELECTRUM + f'network = "signet"\n{key} = 0\n', "node.toml").chain
    assert getattr(cc, key) == 0.0


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", ["-1", "86401", '"10"', "true"])
def test_bad_values(key: str, value: str) -> None:
    e = _refused(f"{key} = {value}\n")
    assert e.key == f"chain.{key}" and e.line == 4 and "must be a number in 0.0..86400.0" in str(e)
