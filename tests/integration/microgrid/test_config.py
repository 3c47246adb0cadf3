"""The [microgrid] section: accepted as documented; every mistake names file, line and key."""
from __future__ import annotations

import re

import pytest

from eschaton.config import ConfigError, parse_config

PEER = "ab" * 32
BASE = '[node]\ndatadir = "/tmp/x"\n[chain]\ndatadir = "/tmp/x/chain"\n'
# The meters and the valve the sales below name (names are checked across sections on load).
HW = ('[hardware]\nboard = "pi4b"\n'
      '[[meter]]\nname = "m1"\ntype = "pulse_flow"\npin = 17\n'
      '[[meter]]\nname = "bulk"\ntype = "pulse_flow"\npin = 27\n'
      '[[valve]]\nname = "v1"\ntype = "solenoid_nc"\npin = 22\n'
      '[[relay]]\nname = "r1"\npin = 23\n')
HEAD = BASE + HW


def sell(**over: object) -> str:
    d: dict[str, object] = {"meter": '"m1"', "valve": '"v1"', "buyer": f'"{PEER}"',
                            "service": '"water"', "unit": '"litre"', "base_unit": '"mL"',
                            "price_msat": "2000", "credit_limit_sat": "100"}
    d.update(over)
    return "[microgrid]\n[[microgrid.sell]]\n" + "".join(
        f"{k} = {v}\n" for k, v in d.items() if v is not None)


def test_documented_section_parses() -> None:
    cfg = parse_config(HEAD + sell() + f'[[microgrid.buy]]\nseller = "{PEER}"\nmax_price_msat = 5\n'
                       '[[microgrid.loss]]\nbulk = "bulk"\ndownstream = ["m1"]\n', "node.toml")
    mg = cfg.microgrid
    assert mg.sell[0].price_msat == 2000 and mg.sell[0].valve == "v1" and mg.sell[0].relay is None
    assert mg.buy[0].seller == PEER and mg.buy[0].meter is None
    assert mg.loss[0].downstream == ("m1",)
    assert parse_config(HEAD, "node.toml").microgrid is None


@pytest.mark.parametrize(("over", "key", "words"), [
    ({"price_msat": "-1"}, "microgrid.sell[0].price_msat", "integer"),
    ({"buyer": '"xyz"'}, "microgrid.sell[0].buyer", "node id"),
    ({"base_unit": '"Wh"'}, "microgrid.sell[0].base_unit", "unit pair"),
    ({"service": '"gas"'}, "microgrid.sell[0].service", "water, electricity or bandwidth"),
    ({"service": '"bandwidth"', "unit": '"MB"', "base_unit": '"B"'}, "microgrid.sell[0].valve",
     "cuts its own client"),
    ({"service": '"bandwidth"', "unit": '"MB"', "base_unit": '"kB"'}, "microgrid.sell[0].base_unit",
     "unit pair"),
    ({"relay": '"r1"'}, "microgrid.sell[0].valve", "exactly one"),
    ({"colour": '"red"'}, "microgrid.sell[0].colour", "unknown key"),
    ({"meter": None}, "microgrid.sell[0].meter", "required"),
    ({"fee_sat": "5"}, "microgrid.sell[0].fee_sat", "fee_period_ms"),
])
def test_mistakes_name_file_line_and_key(over: dict[str, object], key: str, words: str) -> None:
    text = HEAD + sell(**over)
    with pytest.raises(ConfigError) as e:
        parse_config(text, "node.toml")
    msg = str(e.value)
    assert key in msg and words in msg, msg
    # Every mistake points at its line (a missing key at the header of the table that lacks it).
    assert re.match(r"node\.toml:\d+: ", msg), msg


def test_bandwidth_meters_parse() -> None:
    text = (HEAD + '[[bandwidth]]\nname = "h1-uplink"\naddresses = ["10.91.1.2", "10.91.2.0/28"]\n'
            + sell(meter='"h1-uplink"', valve=None, service='"bandwidth"', unit='"MB"', base_unit='"B"'))
    cfg = parse_config(text, "node.toml")
    assert [(b.name, b.addresses) for b in cfg.bandwidth] == [("h1-uplink", ("10.91.1.2", "10.91.2.0/28"))]
    s = cfg.microgrid.sell[0]
    assert s.service == "bandwidth" and s.valve is None and s.relay is None
    assert parse_config(HEAD, "node.toml").bandwidth == ()
    from eschaton.config.bandwidth import guarded_interfaces
    two = parse_config(HEAD + '[[bandwidth]]\nname = "a"\naddresses = ["10.0.0.1"]\ninterface = "bat0"\n'
                       '[[bandwidth]]\nname = "b"\naddresses = ["10.0.0.2"]\ninterface = "bat0"\n'
                       '[[bandwidth]]\nname = "c"\naddresses = ["10.0.0.3"]\n', "node.toml")
    assert guarded_interfaces(two.bandwidth) == ("bat0",)


@pytest.mark.parametrize(("body", "key", "words"), [
    ('name = "Bad Name"\naddresses = ["10.0.0.1"]\n', "bandwidth[0].name", "characters"),
    ('name = "a"\naddresses = ["10.0.0.300"]\n', "bandwidth[0].addresses", "not an IPv4"),
    ('name = "a"\naddresses = ["10.0.0.1/24"]\n', "bandwidth[0].addresses", "not an IPv4"),
    ('name = "a"\naddresses = []\n', "bandwidth[0].addresses", "non-empty"),
    ('name = "a"\n', "bandwidth[0].addresses", "required"),
    ('name = "a"\naddresses = ["10.0.0.1"]\nport = 1\n', "bandwidth[0].port", "unknown key"),
    ('name = "a"\naddresses = ["10.0.0.1"]\ninterface = "a/b"\n', "bandwidth[0].interface", "interface name"),
    ('name = "a"\naddresses = ["10.0.0.1"]\ninterface = "sixteen-chars-xx"\n', "bandwidth[0].interface",
     "interface name"),
])
def test_bandwidth_mistakes_name_the_key(body: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(HEAD + "[[bandwidth]]\n" + body, "node.toml")
    assert key in str(e.value) and words in str(e.value), str(e.value)


def test_an_address_is_metered_once() -> None:
    text = HEAD + ('[[bandwidth]]\nname = "a"\naddresses = ["10.0.0.1"]\n'
                   '[[bandwidth]]\nname = "b"\naddresses = ["10.0.0.1"]\n')
    with pytest.raises(ConfigError, match="already metered by 'a'"):
        parse_config(text, "node.toml")
    overlapping = HEAD + ('[[bandwidth]]\nname = "a"\naddresses = ["10.0.0.0/28"]\n'
                          '[[bandwidth]]\nname = "b"\naddresses = ["10.0.0.3"]\n')
    with pytest.raises(ConfigError, match=r"bandwidth\[1\]\.addresses.*10\.0\.0\.3 overlaps 10\.0\.0\.0/28"):
        parse_config(overlapping, "node.toml")


@pytest.mark.parametrize(("text", "key", "words"), [
    (HEAD + sell(meter='"ghost"'), "microgrid.sell[0].meter", "no [[meter]] named 'ghost'"),
    (HEAD + sell(valve='"ghost"'), "microgrid.sell[0].valve", "no [[valve]] named 'ghost'"),
    (HEAD + sell(valve=None, relay='"ghost"'), "microgrid.sell[0].relay", "no [[relay]] named 'ghost'"),
    (BASE + sell(), "microgrid.sell[0].meter", "no [[meter]] named 'm1'"),
    (HEAD + f'[microgrid]\n[[microgrid.buy]]\nseller = "{PEER}"\nmax_price_msat = 5\nmeter = "ghost"\n',
     "microgrid.buy[0].meter", "no [[meter]] named 'ghost'"),
    (HEAD + '[microgrid]\n[[microgrid.loss]]\nbulk = "bulk"\ndownstream = ["m1", "ghost"]\n',
     "microgrid.loss[0].downstream", "no [[meter]] named 'ghost'"),
    (HEAD + '[[bandwidth]]\nname = "m1"\naddresses = ["10.0.0.1"]\n', "bandwidth[0].name",
     "'m1' is already the name of meter[0]"),
    (HEAD + '[[bandwidth]]\nname = "h1"\naddresses = ["10.0.0.1"]\n' + sell(meter='"h1"'),
     "microgrid.sell[0].meter", "is a [[bandwidth]] meter"),
])
def test_names_are_checked_across_sections_on_load(text: str, key: str, words: str) -> None:
    """A sale of a meter that is not declared fails when the file is read, not when the node
    starts: the error names file, line and key like every other."""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "node.toml")
    msg = str(e.value)
    assert e.value.key == key and words in msg, msg
    assert e.value.line is not None and key.split(".")[-1].split("[")[0] in text.splitlines()[
        e.value.line - 1], msg
