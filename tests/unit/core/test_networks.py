"""The per-network table (core/networks.py): prefixes match embit's, regtest keeps the numbers
the node always proposed, the public networks' channel defaults are in real block time and pass
their own policy, and fees come from the estimate, never below the relay floor."""
from __future__ import annotations

import pytest
from embit.networks import NETWORKS as EMBIT

from eschaton.core.channel.errors import ParamsRejected
from eschaton.core.channel.params import ChannelParams, min_fee_step, version_vsize_bound
from eschaton.core.networks import NETWORKS, ChannelFees, channel_fees, network, open_params
from eschaton.core.script import ScriptError, address_to_script

TB1 = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
BC1 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


@pytest.mark.parametrize("name", NETWORKS)
def test_prefixes_are_embits(name: str) -> None:
    n = network(name)
    assert network(n.embit) is n
    assert EMBIT[n.embit]["bech32"] == n.hrp
    assert EMBIT[n.embit]["p2pkh"] == bytes([n.p2pkh]) and EMBIT[n.embit]["p2sh"] == bytes([n.p2sh])
    assert n.dust_limit == 546 and n.block_interval_s == 600


def test_unknown_network() -> None:
    with pytest.raises(ValueError, match="unknown network 'liquid'"):
        network("liquid")


def test_regtest_proposes_exactly_what_it_always_did() -> None:
    """The parameters the node hard-coded before the table, for the CLI's defaults (1008, 6)."""
    net = network("regtest")
    fees = channel_fees(net, 123_456, 1_500)  # an estimate is ignored on regtest
    assert fees == ChannelFees(2_000, min_fee_step(8))
    assert channel_fees(net, None, 3_000).initial_fee == 3_000
    p = open_params(net, 1_000_000, 200, fees)
    assert p == ChannelParams(opener_contribution=1_000_000, acceptor_contribution=0, lifetime=1208,
                              locktime_step=6, fee_step=min_fee_step(8), initial_fee=2_000,
                              max_payment=1_000_000, reserve=0, escrow_delta=6, safety_margin=3,
                              min_depth=1, low_switch_warning=16)
    # ... and accepts what it always accepted (a 20-block channel, step 1, escrow delta 2).
    net.policy().check(open_params(net, 100_000, 0, fees, lifetime=20, step=1), 0)


def test_min_depth_per_network() -> None:
    assert [network(n).min_depth for n in NETWORKS] == [1, 3, 3, 6]


@pytest.mark.parametrize("name", ["signet", "testnet", "mainnet"])
def test_public_defaults_in_block_time_pass_their_own_policy(name: str) -> None:
    net = network(name)
    fees = channel_fees(net, 10_000, 0)
    p = open_params(net, 5_000_000, 800_000, fees)
    net.policy().check(p, 800_000)
    assert p.min_depth == net.min_depth and p.locktime_step == net.locktime_step
    assert p.lifetime == 800_000 + net.lifetime
    # An offline window of hours, and a budget of dozens of switches before a re-anchor.
    assert net.hours(p.locktime_step) >= 6
    assert p.switches_left(p.lifetime, 800_000) >= 80


def test_mainnet_window_covers_a_day_offline() -> None:
    net = network("mainnet")
    assert net.hours(net.locktime_step) >= 24
    assert 24 * 7 * 4 <= net.hours(net.lifetime) <= 24 * 7 * 26


def test_mainnet_policy_refuses_regtest_numbers() -> None:
    """A peer proposing the regtest defaults on mainnet (one confirmation, a one-hour window) is
    refused by name."""
    main = network("mainnet")
    fees = channel_fees(main, None, 0)
    p = open_params(network("regtest"), 1_000_000, 800_000, fees, lifetime=500, step=144)
    with pytest.raises(ParamsRejected, match="lifetime outside policy"):
        main.policy().check(p, 800_000)
    p = open_params(network("regtest"), 1_000_000, 800_000, fees, lifetime=main.lifetime)
    with pytest.raises(ParamsRejected, match="locktime_step below policy"):
        main.policy().check(p, 800_000)
    p = open_params(network("regtest"), 1_000_000, 800_000, fees, lifetime=main.lifetime, step=144)
    with pytest.raises(ParamsRejected, match="min_depth below policy"):
        main.policy().check(p, 800_000)


def test_fees_from_the_estimate_never_below_the_relay_floor() -> None:
    net = network("signet")
    floor = min_fee_step(8)
    vsize = version_vsize_bound(10)
    assert floor == vsize  # 1 sat/vB over the largest version
    for none in (None, 0, -100_000_000):  # no estimate (Electrum's -1 BTC/kB), or nonsense
        assert channel_fees(net, none, 0) == ChannelFees(floor, floor)
    assert channel_fees(net, 500, 0) == ChannelFees(floor, floor)  # below the relay minimum
    f = channel_fees(net, 20_000, 99_999)  # 20 sat/vB; the funding fee does not count here
    assert f.initial_fee == 20 * vsize and f.fee_step == -(-20 * vsize // 10)
    capped = channel_fees(net, 10_000_000, 0)  # 10,000 sat/vB: capped by what a peer accepts
    assert capped == ChannelFees(50_000, 5_000)


def test_a_foreign_address_is_refused_in_one_line() -> None:
    with pytest.raises(ScriptError) as e:
        address_to_script(TB1, "mainnet")
    assert str(e.value) == f"address {TB1!r} is not a mainnet address"
    with pytest.raises(ScriptError, match="is not a signet address"):
        address_to_script(BC1, "signet")
    assert address_to_script(BC1, "main") == address_to_script(BC1, "mainnet")
    assert address_to_script(TB1, "testnet") == address_to_script(TB1, "signet")
