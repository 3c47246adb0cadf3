"""Configuration: defaults, a full file, and errors that name file, key and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from eschaton.config import ConfigError, find_line, load_client_config, load_config, parse_config

from .helpers import keys

PEER = keys("bob").node_id.hex()

FULL = f"""
[node]
datadir = "/srv/esc"
name = "pump-house"

[network]
listen = ["tcp://0.0.0.0:9735", "serial:///dev/ttyAMA0?baud=115200"]

[network.discovery]
interface = "bat0"
port = 47801
interval = 5

[[network.peers]]
id = "{PEER}"
url = "tcp://10.0.0.2:9735"
name = "bob"

[api]
socket = "ctl.sock"
tcp_port = 8090

[chain]
backend = "electrum"
url = "tcp://127.0.0.1:50001"
"""


def test_defaults_from_an_empty_file() -> None:
    cfg = parse_config("", "empty.toml")
    assert cfg.node.datadir == Path("/var/lib/eschaton")
    assert cfg.network.listen == ("tcp://0.0.0.0:9735",)
    assert cfg.network.discovery.port == 47800 and cfg.network.discovery.enabled
    assert cfg.api.socket == Path("/var/lib/eschaton/api.sock") and cfg.api.tcp_port is None
    # The chain lives in <datadir>/chain, where `eschaton chain --datadir <datadir>` looks.
    assert cfg.chain.backend == "embedded" and cfg.chain.datadir == Path("/var/lib/eschaton")
    assert cfg.metering is None


def test_a_chain_made_under_the_old_default_layout_is_kept(tmp_path: Path) -> None:
    cfg = parse_config(f'[node]\ndatadir = "{tmp_path}"\n', "node.toml")
    assert cfg.chain.datadir == tmp_path
    (tmp_path / "chain" / "chain").mkdir(parents=True)
    (tmp_path / "chain" / "chain" / "index.sqlite").write_bytes(b"")
    cfg = parse_config(f'[node]\ndatadir = "{tmp_path}"\n', "node.toml")
    assert cfg.chain.datadir == tmp_path / "chain"
    cfg = parse_config(f'[node]\ndatadir = "{tmp_path}"\n[chain]\ndatadir = "."\n', "node.toml")
    assert cfg.chain.datadir == tmp_path  # an explicit setting always wins


def test_full_file(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_text(FULL)
    cfg = load_config(p)
    assert cfg.source == str(p)
    assert cfg.node.name == "pump-house"
    assert cfg.network.discovery.interface == "bat0" and cfg.network.discovery.interval == 5.0
    assert cfg.network.peers[0].node_id.hex() == PEER and cfg.network.peers[0].name == "bob"
    assert cfg.api.socket == Path("/srv/esc/ctl.sock") and cfg.api.tcp_port == 8090
    assert cfg.chain.url == "tcp://127.0.0.1:50001"
    with pytest.raises(AttributeError):
        cfg.node.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("old,new,key,line,words", [
    ("port = 47801", "port = 70000", "network.discovery.port", 11, "1..65535"),
    ("port = 47801", 'port = "47801"', "network.discovery.port", 11, "integer"),
    (f'id = "{PEER}"', 'id = "beef"', "network.peers[0].id", 15, "64 hex"),
    ('url = "tcp://10.0.0.2:9735"', 'url = "tcp://10.0.0.2"', "network.peers[0].url", 16, "port"),
    ('url = "tcp://10.0.0.2:9735"', 'url = "ble://aa"', "network.peers[0].url", 16, "needs the peer's address"),
    ('url = "tcp://10.0.0.2:9735"', 'url = "ble://hci-socket:0/AA:BB?psm=229"', "network.peers[0].url", 16,
     "not a Bluetooth address"),
    ('url = "tcp://10.0.0.2:9735"', 'url = "ble://hci-socket:0/C1:00:00:00:00:01?psm=17"',
     "network.peers[0].url", 16, "outside the LE dynamic range"),
    ('"serial:///dev/ttyAMA0?baud=115200"', '"ble://hci-socket:0/C1:00:00:00:00:01"', "network.listen[1]", 7,
     "a listen URL names no peer"),
    ('interval = 5', 'interval = 5\nble = true', "network.discovery.ble", 13, "needs a ble:// URL"),
    ('listen = [', 'advertise = ["ble://hci-socket:0"]\nlisten = [', "network.advertise[0]", 7,
     "not announced in beacons"),
    ('name = "pump-house"', 'name = "pump-house"\nnmae = 1', "node.nmae", 5, "unknown key"),
    ('backend = "electrum"', 'backend = "bitcoind"', "chain.backend", 24, "embedded, electrum"),
    ('url = "tcp://127.0.0.1:50001"', "", "chain.url", 23, "required"),
    ('interval = 5', 'interval = -1', "network.discovery.interval", 12, "number"),
    ('"serial:///dev/ttyAMA0?baud=115200"', '"smoke://x"', "network.listen[1]", 7, "unknown transport"),
    ('datadir = "/srv/esc"', 'datadir = "relative"', "node.datadir", 3, "absolute"),
])
def test_errors_name_file_key_and_line(tmp_path: Path, old, new, key, line, words) -> None:
    assert old in FULL
    p = tmp_path / "bad.toml"
    p.write_text(FULL.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    e = exc.value
    assert e.source == str(p) and e.key == key and e.line == line, str(e)
    assert str(p) in str(e) and key in str(e) and words in str(e)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "syntax.toml"
    p.write_text("[node]\nname = \n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert exc.value.line == 2 and str(p) in str(exc.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_find_line_for_nested_arrays() -> None:
    text = "[[network.peers]]\nid='a'\n[[network.peers]]\nurl='x'\nid='b'\n"
    assert find_line(text, ("network", "peers", 1, "id")) == 5
    assert find_line(text, ("network", "peers", 0, "id")) == 2
    assert find_line(text, ("network", "nothing")) is None


def test_chain_serve_on_the_mesh() -> None:
    cfg = parse_config('[chain]\nserve = "tcp://10.99.0.1:50001"\n', "node.toml")
    assert cfg.chain.serve == ("10.99.0.1", 50001)
    assert parse_config("", "node.toml").chain.serve is None


@pytest.mark.parametrize("text,words", [
    ('serve = "tcp://gateway:50001"', "tcp://IPV4:PORT"),
    ('serve = "tcp://10.0.0.1:70000"', "tcp://IPV4:PORT"),
    ('serve = "tcp://10.0.0.300:50001"', "not an IPv4 address"),
    ('serve = "tcp://10.0.0.1:1"\nbackend = "electrum"\nurl = "tcp://10.0.0.2:1"', "only the owner"),
])
def test_chain_serve_mistakes(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f"[chain]\n{text}\n", "node.toml")
    assert exc.value.key == "chain.serve" and words in str(exc.value), str(exc.value)


def test_chain_rpc_keys() -> None:
    cfg = parse_config('[chain]\nrpc_port = 18443\nrpc_user = "ex"\nrpc_password = "pw"\n', "node.toml").chain
    assert (cfg.rpc_port, cfg.rpc_user, cfg.rpc_password) == (18443, "ex", "pw")
    assert parse_config("", "node.toml").chain.rpc_port is None
    cfg = parse_config('[node]\ndatadir = "/d"\n[chain]\nbackend = "rpc"\nurl = "http://127.0.0.1:8332"\n'
                       'rpc_cookie = "bitcoind/.cookie"\nrpc_poll = 0.5\n', "node.toml").chain
    assert (cfg.backend, cfg.url, cfg.rpc_cookie, cfg.rpc_poll) == (
        "rpc", "http://127.0.0.1:8332", Path("/d/bitcoind/.cookie"), 0.5)


@pytest.mark.parametrize("text,key,words", [
    ("rpc_port = 70000", "chain.rpc_port", "0..65535"),
    ('rpc_port = "18443"', "chain.rpc_port", "integer"),
    ('rpc_port = 1\nbackend = "electrum"\nurl = "tcp://10.0.0.2:1"', "chain.rpc_port", "only the owner"),
    ('rpc_user = "ex"', "chain.rpc_password", "go together"),
    ('rpc_user = "e:x"\nrpc_password = "pw"', "chain.rpc_user", "':'"),
    ('backend = "rpc"', "chain.url", "required"),
    ('backend = "rpc"\nurl = "http://127.0.0.1:8332"', "chain.url", "rpc_cookie"),
    ('backend = "rpc"\nurl = "http://u:p@127.0.0.1:8332"\nrpc_cookie = "c"', "chain.url", "without credentials"),
    ('backend = "rpc"\nurl = "tcp://127.0.0.1:8332"\nrpc_cookie = "c"', "chain.url", "http://HOST:PORT"),
    ('backend = "rpc"\nurl = "http://127.0.0.1:8332"\nrpc_cookie = "c"\nrpc_poll = 0', "chain.rpc_poll", "0.05"),
])
def test_chain_rpc_mistakes(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f"[chain]\n{text}\n", "node.toml")
    assert exc.value.key == key and words in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


@pytest.mark.parametrize("old,new,key,line,words", [
    # A port past 65535 is out of range, not missing; every URL of the config says so.
    ('"tcp://0.0.0.0:9735"', '"tcp://0.0.0.0:70000"', "network.listen[0]", 7, "out of range 0..65535"),
    ('"tcp://0.0.0.0:9735"', '"udp://0.0.0.0:99999999999"', "network.listen[0]", 7,
     "out of range 0..65535"),
    ('"tcp://0.0.0.0:9735"', '"tcp://0.0.0.0:port"', "network.listen[0]", 7, "must be a number"),
    ('url = "tcp://10.0.0.2:9735"', 'url = "tcp://10.0.0.2:70000"', "network.peers[0].url", 16,
     "out of range 1..65535"),
    ('url = "tcp://10.0.0.2:9735"', 'url = "tcp://10.0.0.2:0"', "network.peers[0].url", 16,
     "out of range 1..65535"),  # a peer cannot be dialled on port 0
    ('url = "tcp://10.0.0.2:9735"', 'url = "tcp://10.0.0.2:-1"', "network.peers[0].url", 16,
     "must be a number"),
    ('"tcp://0.0.0.0:9735"', '"tcp://0.0.0.0:9735"]\nadvertise = ["tcp://10.0.0.1:65536"',
     "network.advertise[0]", 8, "out of range 1..65535"),
    # [chain] url: the node dials it, so it must be tcp://HOST:PORT with a real port.
    ('url = "tcp://127.0.0.1:50001"', 'url = "tcp://127.0.0.1:70000"', "chain.url", 25, "out of range"),
    ('url = "tcp://127.0.0.1:50001"', 'url = "tcp://127.0.0.1"', "chain.url", 25, "needs a port"),
    ('url = "tcp://127.0.0.1:50001"', 'url = "tcp://127.0.0.1:x"', "chain.url", 25, "must be a number"),
    ('url = "tcp://127.0.0.1:50001"', 'url = "127.0.0.1:50001"', "chain.url", 25, "missing scheme"),
    ('url = "tcp://127.0.0.1:50001"', 'url = "udp://127.0.0.1:50001"', "chain.url", 25,
     "tcp://HOST:PORT"),
    # [api] tcp_port: 1..65535, or 0 for none.
    ("tcp_port = 8090", "tcp_port = 70000", "api.tcp_port", 21, "1..65535"),
    ("tcp_port = 8090", "tcp_port = -1", "api.tcp_port", 21, "1..65535"),
    ("tcp_port = 8090", 'tcp_port = "8090"', "api.tcp_port", 21, "1..65535"),
    ("tcp_port = 8090", "tcp_port = true", "api.tcp_port", 21, "1..65535"),
])
def test_ports_and_urls_name_the_fault(tmp_path: Path, old, new, key, line, words) -> None:
    assert old in FULL
    p = tmp_path / "bad.toml"
    p.write_text(FULL.replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    e = exc.value
    assert e.key == key and e.line == line and words in str(e), str(e)
    assert "needs a port" not in str(e) or words == "needs a port", str(e)


def test_api_tcp_port_zero_or_absent_is_off() -> None:
    assert parse_config("[api]\ntcp_port = 0\n", "node.toml").api.tcp_port is None
    assert parse_config("", "node.toml").api.tcp_port is None
    assert parse_config("[api]\ntcp_port = 65535\n", "node.toml").api.tcp_port == 65535
    # Listening on port 0 still lets the kernel pick one.
    assert parse_config('[network]\nlisten = ["tcp://127.0.0.1:0"]\n', "n.toml").network.listen


def test_client_config_is_the_node_and_api_of_the_full_reader(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_text(FULL)
    full, client = load_config(p), load_client_config(p)
    assert (client.source, client.node, client.api) == (full.source, full.node, full.api)
    assert load_client_config(_write(tmp_path, "")).api == parse_config("", "x").api


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("old,new", [
    ('datadir = "/srv/esc"', 'datadir = "relative"'),
    ('name = "pump-house"', 'name = "pump-house"\nnmae = 1'),
    ("tcp_port = 8090", "tcp_port = 70000"),
    ("tcp_port = 8090", "tcp_port = true"),
    ('socket = "ctl.sock"', "socket = 1"),
    ('socket = "ctl.sock"', 'socket = "ctl.sock"\nsokcet = "x"'),
    ('datadir = "/srv/esc"', 'datadir = "/srv/esc"\n[node.extra]'),
    ('name = "pump-house"', "name = "),
])
def test_client_config_refuses_node_and_api_mistakes_in_the_same_words(tmp_path: Path, old: str,
                                                                      new: str) -> None:
    assert old in FULL
    p = _write(tmp_path, FULL.replace(old, new, 1))
    with pytest.raises(ConfigError) as full:
        load_config(p)
    with pytest.raises(ConfigError) as client:
        load_client_config(p)
    assert str(client.value) == str(full.value)


def test_client_config_leaves_the_other_sections_to_the_node(tmp_path: Path) -> None:
    """A client only finds the running node: what the node refuses at start (here a transport it
    does not know) is not the client's to check."""
    p = _write(tmp_path, FULL.replace('"serial:///dev/ttyAMA0?baud=115200"', '"smoke://x"'))
    with pytest.raises(ConfigError, match="unknown transport"):
        load_config(p)
    assert load_client_config(p).api.tcp_port == 8090
    with pytest.raises(ConfigError, match="cannot read"):
        load_client_config(tmp_path / "missing.toml")


def test_channel_section_turn_dwell() -> None:
    assert parse_config("").channel.turn_dwell == 0.3
    assert parse_config("[channel]\nturn_dwell_ms = 0\n").channel.turn_dwell == 0.0
    for bad in ("-1", "1501", '"fast"', "true"):
        with pytest.raises(ConfigError) as e:
            parse_config(f"[channel]\nturn_dwell_ms = {bad}\n", "node.toml")
        assert str(e.value) == "node.toml:2: channel.turn_dwell_ms: must be an integer in 0..1500"
    assert (parse_config("").channel.payment_retention_days, parse_config("").channel.payment_records) \
        == (30, 100_000)
    c = parse_config("[channel]\npayment_retention_days = 2\npayment_records = 500\n").channel
    assert (c.payment_retention_days, c.payment_records) == (2, 500)
    with pytest.raises(ConfigError) as e:
        parse_config("[channel]\npayment_records = 5\n", "node.toml")
    assert str(e.value) == "node.toml:2: channel.payment_records: must be an integer in 100..10000000"
    assert parse_config("").channel.payment_keep_hours == 24
    assert parse_config("[channel]\npayment_keep_hours = 0\n").channel.payment_keep_hours == 0
    with pytest.raises(ConfigError) as e:  # at most the retention in days: older records go by age anyway
        parse_config("[channel]\npayment_retention_days = 2\npayment_keep_hours = 49\n", "node.toml")
    assert str(e.value) == "node.toml:3: channel.payment_keep_hours: must be an integer in 0..48"
    with pytest.raises(ConfigError, match="channel.dwell: unknown key"):
        parse_config("[channel]\ndwell = 3\n")


def test_chain_electrum_servers() -> None:
    one = parse_config('[chain]\nbackend = "electrum"\nurl = "tcp://10.0.0.2:50001"\n', "node.toml").chain
    assert one.urls == ("tcp://10.0.0.2:50001",) and one.url == "tcp://10.0.0.2:50001"
    listed = parse_config('[chain]\nbackend = "electrum"\nurl = ["tcp://a.example:50001", "tcp://10.0.0.3:1"]\n',
                          "node.toml").chain
    assert listed.urls == ("tcp://a.example:50001", "tcp://10.0.0.3:1") and listed.url == "tcp://a.example:50001"
    joined = parse_config('[chain]\nbackend = "electrum"\nurl = "tcp://a:1, tcp://b:2 tcp://c:3"\n',
                          "node.toml").chain
    assert joined.urls == ("tcp://a:1", "tcp://b:2", "tcp://c:3")


@pytest.mark.parametrize("url,words", [
    ('["tcp://a:1", 5]', "list of URLs"),
    ('["tcp://a:1", "tcp://a:1"]', "twice"),
    ('["tcp://a:1", "ssl://b:50002"]', "tcp://HOST:PORT"),
    ('"tcp://a:1, tcp://b"', "needs a port"),
    ("[]", "required"),
])
def test_chain_electrum_server_mistakes(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f'[chain]\nbackend = "electrum"\nurl = {url}\n', "node.toml")
    assert exc.value.key == "chain.url" and words in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_routing_section_fee_policy() -> None:
    r = parse_config("").routing
    assert (r.fee_base_sat, r.fee_ppm, r.fee_hold_ppm, r.delta) == (1, 1000, 10, 24)
    r = parse_config("[routing]\nfee_base_sat = 0\nfee_ppm = 250\nfee_hold_ppm = 0\ndelta = 40\n").routing
    assert (r.fee_base_sat, r.fee_ppm, r.fee_hold_ppm, r.delta) == (0, 250, 0, 40)
    with pytest.raises(ConfigError) as e:
        parse_config("[routing]\ndelta = 7\n", "node.toml")
    assert str(e.value) == "node.toml:2: routing.delta: must be an integer in 8..2016"
    with pytest.raises(ConfigError, match="routing.fee: unknown key"):
        parse_config("[routing]\nfee = 3\n")


def test_a_ble_node() -> None:
    cfg = parse_config(f"""
[network]
listen = ["ble://hci-socket:0?psm=0x81"]
[network.discovery]
enabled = false
ble = true
[[network.peers]]
id = "{PEER}"
url = "ble://hci-socket:0/C1:22:33:44:55:66"
""", "node.toml")
    assert cfg.network.discovery.ble and not cfg.network.discovery.enabled
    assert cfg.network.listen == ("ble://hci-socket:0?psm=0x81",)
    assert cfg.network.peers[0].url == "ble://hci-socket:0/C1:22:33:44:55:66"
    assert not parse_config("", "node.toml").network.discovery.ble  # off by default
