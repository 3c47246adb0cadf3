"""eschaton.toml (the boot partition's file): every key, and every mistake as one line naming
file:line and key."""
from __future__ import annotations

import base64
import ipaddress
import struct
import tomllib
from pathlib import Path

import pytest

from eschaton.config import ConfigError, parse_config
from eschaton.core.link.identity import NodeKeys
from eschaton.field.bootconf import load_boot_config, parse_boot_config

PEER = NodeKeys.from_seed(bytes(32)).node_id.hex()
EXAMPLE = Path(__file__).resolve().parents[3] / "image" / "eschaton.toml.example"


def ssh_key(kind: str = "ssh-ed25519", inner: str | None = None) -> str:
    name = (inner or kind).encode()
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", 32) + bytes(range(32))
    return f"{kind} {base64.b64encode(blob).decode()} me@laptop"


FULL = f"""\
[node]
role = "gateway"
name = "gw-1"

[wifi]
country = "KE"
mesh_id = "eschaton-village"
key = "correct horse"
channel = 11
mode = "ibss"
interface = "wlan1"

[mesh]
interfaces = ["wlan1", "eth0"]
prefix = "10.42.0.0/16"
address = "10.42.0.1"
netem = "loss 5% delay 20ms 5ms"

[ssh]
authorized_keys = ["{ssh_key()}"]

[chain]
rpc_port = 0

[[meter]]
name = "water"
type = "pulse_flow"
pin = 17
pulses_per_litre = 450

[[network.peers]]
id = "{PEER}"
url = "tcp://10.42.0.7:9735"
"""


def error(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_boot_config(text, "/boot/firmware/eschaton.toml")
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_every_key_is_read() -> None:
    c = parse_boot_config(FULL, "/boot/firmware/eschaton.toml")
    assert (c.role, c.name) == ("gateway", "gw-1")
    assert c.wifi is not None
    assert (c.wifi.country, c.wifi.mesh_id, c.wifi.key, c.wifi.channel, c.wifi.mode,
            c.wifi.interface) == ("KE", "eschaton-village", "correct horse", 11, "ibss", "wlan1")
    assert c.wifi.frequency == 2462
    assert c.mesh.interfaces == ("wlan1", "eth0")
    assert c.mesh.prefix == ipaddress.IPv4Network("10.42.0.0/16")
    assert c.mesh.address == ipaddress.IPv4Address("10.42.0.1")
    assert c.mesh.netem == "loss 5% delay 20ms 5ms"
    assert c.authorized_keys == (ssh_key(),)
    # The node's sections pass through; the gateway serves its chain; the result is what the
    # node's own reader accepts.
    node = parse_config(c.node_toml("gw-1"), "node.toml")
    assert node.node.name == "gw-1"
    assert str(node.node.datadir) == "/var/lib/eschaton"
    assert node.chain.backend == "embedded" and node.chain.serve == ("0.0.0.0", 50001)
    assert node.chain.rpc_port == 0
    assert node.metering is not None and [m.name for m in node.metering.meters] == ["water"]
    assert [p.url for p in node.network.peers] == ["tcp://10.42.0.7:9735"]


def test_defaults() -> None:
    c = parse_boot_config("", "e.toml")
    assert (c.role, c.name, c.wifi, c.authorized_keys) == ("house", None, None, ())
    assert c.mesh.interfaces == ("eth*", "en*") and str(c.mesh.prefix) == "10.99.0.0/16"
    assert c.mesh.address is None and c.mesh.netem is None
    node = parse_config(c.node_toml("eschaton-00112233"), "node.toml")
    assert node.network.listen == ("tcp://0.0.0.0:9735",) and node.network.discovery.enabled
    assert node.chain.backend == "electrum" and node.chain.discover and node.chain.url is None
    house = parse_config(parse_boot_config('[chain]\nurl = "tcp://10.99.0.1:50001"\n', "e.toml")
                         .node_toml("h"), "node.toml")
    assert (house.chain.backend, house.chain.url, house.chain.discover) == ("electrum", "tcp://10.99.0.1:50001", False)
    own = parse_config(parse_boot_config('[chain]\nbackend = "embedded"\n', "e.toml").node_toml("h"), "node.toml")
    assert own.chain.backend == "embedded" and own.chain.serve is None
    wifi = parse_boot_config('[wifi]\ncountry = "DE"\nmesh_id = "m"\nkey = "12345678"\n', "e.toml")
    assert wifi.wifi is not None and (wifi.wifi.channel, wifi.wifi.mode) == (6, "80211s")
    assert wifi.mesh.interfaces == ("wlan0",)
    five = parse_boot_config('[wifi]\ncountry = "DE"\nmesh_id = "m"\nkey = "12345678"\nchannel = 36\n', "e.toml")
    assert five.wifi is not None and five.wifi.frequency == 5180


def test_the_shipped_example_is_valid() -> None:
    c = load_boot_config(EXAMPLE)
    assert c.role == "house"
    parse_config(c.node_toml("eschaton-00112233"), "node.toml")


def test_generated_node_toml_round_trips() -> None:
    c = parse_boot_config(FULL, "e.toml")
    text = c.node_toml("gw-1")
    assert tomllib.loads(text)["meter"] == tomllib.loads(FULL)["meter"]


@pytest.mark.parametrize(("text", "expected"), [
    # TOML itself
    ('[node]\nrole = "house\n', "/boot/firmware/eschaton.toml:2: not valid TOML"),
    # unknown keys and sections
    ('[node]\nrole = "house"\nrloe = 1\n', "eschaton.toml:3: node.rloe: unknown key"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\nkey = "12345678"\nchanel = 6\n', ":5: wifi.chanel: unknown key"),
    ('[mesh]\ninterface = ["eth0"]\n', ":2: mesh.interface: unknown key"),
    ('[ssh]\nkeys = []\n', ":2: ssh.keys: unknown key"),
    ('[meshh]\nprefix = "10.0.0.0/8"\n', ":1: meshh: unknown key"),
    ('role = "house"\n', ":1: role: must be inside a section"),
    # [node]
    ('[node]\nrole = "village"\n', ":2: node.role: must be one of house, gateway"),
    ('[node]\nname = "House 1"\n', ":2: node.name: must be a hostname"),
    ('[node]\nname = "-h"\n', ":2: node.name: must be a hostname"),
    ('[node]\ndatadir = "/x"\n', ":2: node.datadir: is fixed in the image"),
    # [wifi]
    ('[wifi]\nmesh_id = "m"\nkey = "12345678"\n', ":1: wifi.country: is required"),
    ('[wifi]\ncountry = "KE"\nkey = "12345678"\n', ":1: wifi.mesh_id: is required"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\n', ":1: wifi.key: is required"),
    ('[wifi]\ncountry = "ke"\nmesh_id = "m"\nkey = "12345678"\n', ":2: wifi.country: must be a two-letter"),
    ('[wifi]\ncountry = "KE"\nmesh_id = ""\nkey = "12345678"\n', ":3: wifi.mesh_id: must be 1 to 32 bytes"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "' + "m" * 33 + '"\nkey = "12345678"\n', ":3: wifi.mesh_id: must be 1 to 32"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\nkey = "short"\n', ":4: wifi.key: must be 8 to 63"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\nkey = "12345678"\nchannel = 52\n', ":5: wifi.channel: must be 1-14"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\nkey = "12345678"\nchannel = 0\n', ":5: wifi.channel: must be an integer"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\nkey = "12345678"\nmode = "adhoc"\n', ":5: wifi.mode: must be one of 80211s, ibss"),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\nkey = "12345678"\ninterface = "wlan 0"\n', ":5: wifi.interface: "),
    ('[wifi]\ncountry = "KE"\nmesh_id = "m"\nkey = "12345678"\n[mesh]\ninterfaces = ["eth0"]\n',
     ":6: mesh.interfaces: must include wlan0"),
    ('[wifi]\ncountry = 1\nmesh_id = "m"\nkey = "12345678"\n', ":2: wifi.country: must be a string"),
    # [mesh]
    ('[mesh]\ninterfaces = []\n', ":2: mesh.interfaces: must name at least one"),
    ('[mesh]\ninterfaces = "eth0"\n', ":2: mesh.interfaces: must be a list of strings"),
    ('[mesh]\ninterfaces = ["bat0"]\n', ":2: mesh.interfaces: 'bat0' is not"),
    ('[mesh]\ninterfaces = ["b*"]\n', ":2: mesh.interfaces: 'b*' is not"),
    ('[mesh]\ninterfaces = ["eth 0"]\n', ":2: mesh.interfaces: 'eth 0' is not"),
    ('[mesh]\ninterfaces = ["eth0", "eth0"]\n', ":2: mesh.interfaces: names eth0 twice"),
    ('[mesh]\nprefix = "10.99.0.1/16"\n', ":2: mesh.prefix: not an IPv4 network"),
    ('[mesh]\nprefix = "10.99.0.0/30"\n', ":2: mesh.prefix: must be /8 to /29"),
    ('[mesh]\naddress = "10.98.0.1"\n', ":2: mesh.address: must be a host address inside"),
    ('[mesh]\naddress = "10.99.0.0"\n', ":2: mesh.address: must be a host address inside"),
    ('[mesh]\naddress = "x"\n', ":2: mesh.address: 'x' is not an IPv4"),
    ('[mesh]\nnetem = "lose 5%"\n', ":2: mesh.netem: 'lose' is not a netem setting"),
    ('[mesh]\nnetem = "loss five"\n', ":2: mesh.netem: loss needs a value"),
    ('[mesh]\nnetem = ""\n', ":2: mesh.netem: is empty"),
    # [ssh]
    ('[ssh]\nauthorized_keys = ["ssh-dss AAAA x"]\n', ":2: ssh.authorized_keys[0]: must be a public key line"),
    ('[ssh]\nauthorized_keys = ["ssh-ed25519 !!!! x"]\n', ":2: ssh.authorized_keys[0]: the key is not valid base64"),
    (f'[ssh]\nauthorized_keys = ["{ssh_key("ssh-rsa", "ssh-ed25519")}"]\n',
     ":2: ssh.authorized_keys[0]: the key says 'ssh-ed25519' inside"),
    ('[ssh]\nauthorized_keys = "ssh-ed25519 AAAA"\n', ":2: ssh.authorized_keys: must be a list"),
    # [chain] and the node's sections: checked by the node's own reader, on this file's lines
    ('[node]\nrole = "gateway"\n\n[chain]\nbackend = "electrum"\n', ":5: chain.backend: a gateway serves"),
    ('[chain]\nbackend = "electrum"\n', ":1: chain.url: is required"),
    ('[chain]\ndiscover = true\nurl = "tcp://1.2.3.4:5"\n', ":2: chain.discover: needs backend"),
    ('[chain]\ngateways = ["ab"]\n', ":2: chain.gateways: [0]: "),
    ('[chain]\nbackend = "electrum"\nurl = "http://x"\n', ":3: chain.url: "),
    ('[chain]\nblocks = 1\n', ":2: chain.blocks: unknown key"),
    ('[node]\nrole = "house"\n\n[[meter]]\nname = "w"\ntype = "pulse_flow"\npin = 99\npulses_per_litre = 1\n',
     ":7: meter[0].pin: "),
    ('[network]\nlisten = ["foo://1.2.3.4:1"]\n', ":2: network.listen"),
    ('[valves]\nx = 1\n', ":1: valves: unknown key"),
])
def test_each_mistake_is_one_line_with_file_line_and_key(text: str, expected: str) -> None:
    msg = error(text)
    assert expected in msg, msg
    assert msg.startswith("/boot/firmware/eschaton.toml:"), msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_boot_config(tmp_path / "eschaton.toml")
    (tmp_path / "eschaton.toml").write_bytes(b"\xff\xfe[node]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_boot_config(tmp_path / "eschaton.toml")
