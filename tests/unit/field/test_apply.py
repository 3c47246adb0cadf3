"""Applying eschaton.toml at boot, on a directory standing for the root: what a good file
writes, that a bad file keeps the last good configuration and says why, and that a rewrite of
the same configuration changes nothing."""
from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

from eschaton.config import parse_config
from eschaton.core.link.identity import NodeKeys
from eschaton.field.apply import BOOT_FILE, LAST_GOOD, STATUS, apply
from eschaton.field.bootconf import parse_boot_config

NODE_ID = NodeKeys.from_seed(bytes(32)).node_id.hex()

GOOD = """\
[node]
role = "gateway"
name = "gw"

[wifi]
country = "KE"
mesh_id = "village"
key = "12345678"

[mesh]
interfaces = ["wlan0", "eth0"]
netem = "loss 5%"
"""


def boot_root(tmp_path: Path, text: str | None) -> Path:
    (tmp_path / "boot/firmware").mkdir(parents=True, exist_ok=True)
    (tmp_path / "var/lib/eschaton").mkdir(parents=True, exist_ok=True)
    if text is not None:
        (tmp_path / BOOT_FILE).write_text(text)
    return tmp_path


def status(root: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads((root / STATUS).read_text())
    return result


def test_a_good_file_sets_everything(tmp_path: Path) -> None:
    root = boot_root(tmp_path, GOOD)
    out = apply(root, NODE_ID)
    assert out.ok and out.error is None and out.hostname == "gw"
    node = parse_config((root / "etc/eschaton/node.toml").read_text(), "node.toml")
    assert node.node.name == "gw" and node.chain.serve == ("0.0.0.0", 50001)
    assert (root / "etc/hostname").read_text() == "gw\n"
    assert "127.0.1.1\tgw" in (root / "etc/hosts").read_text()
    net = root / "etc/systemd/network"
    assert sorted(p.name for p in net.iterdir()) == [
        "10-eschaton-bat0.netdev", "10-eschaton-bat0.network",
        "10-eschaton-mesh-0.network", "10-eschaton-mesh-1.network"]
    assert "Name=wlan0\n" in (net / "10-eschaton-mesh-0.network").read_text()
    assert "BatmanAdvanced=bat0" in (net / "10-eschaton-mesh-1.network").read_text()
    assert "BridgeLoopAvoidance=false" in (net / "10-eschaton-bat0.netdev").read_text()
    wpa = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    text = wpa.read_text()
    assert "mode=5" in text and "key_mgmt=SAE" in text and 'sae_password="12345678"' in text
    assert "frequency=2437" in text and "country=KE" in text
    assert stat.S_IMODE(wpa.stat().st_mode) == 0o600  # it holds the mesh key
    mesh = json.loads((root / "etc/eschaton/mesh.json").read_text())
    assert mesh == {"node_id": NODE_ID, "prefix": "10.99.0.0/16", "address": None,
                    "interfaces": ["wlan0", "eth0"], "netem": "loss 5%", "wifi": "wlan0"}
    assert (root / LAST_GOOD).read_text() == GOOD
    assert status(root) == {"ok": True, "applied": "/boot/firmware/eschaton.toml", "error": None,
                            "file": "/boot/firmware/eschaton.toml", "hostname": "gw"}
    # The same file again writes nothing.
    assert apply(root, NODE_ID).changed == []


def test_a_bad_file_keeps_the_last_good_configuration_and_says_why(tmp_path: Path) -> None:
    root = boot_root(tmp_path, GOOD)
    apply(root, NODE_ID)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "eschaton-field" not in str(p)
              and p.name != "boot-config.json" and "boot/firmware" not in str(p)}
    (root / BOOT_FILE).write_text(GOOD.replace('key = "12345678"', 'key = "short"'))
    out = apply(root, NODE_ID)
    assert not out.ok
    assert out.applied == "the last good configuration"
    assert out.error == "/boot/firmware/eschaton.toml:8: wifi.key: must be 8 to 63 printable ASCII characters, without '\"'"
    assert "refused, kept the last good configuration" in out.message()
    assert out.changed == []
    after = {p: p.read_bytes() for p in before}
    assert after == before
    assert (root / LAST_GOOD).read_text() == GOOD
    st = status(root)
    assert st["ok"] is False and st["error"] == out.error
    # Fixed: applied again.
    (root / BOOT_FILE).write_text(GOOD.replace('name = "gw"', 'name = "gw2"'))
    assert apply(root, NODE_ID).ok
    assert (root / "etc/hostname").read_text() == "gw2\n"


def test_a_bad_file_before_any_good_one_gets_the_defaults(tmp_path: Path) -> None:
    root = boot_root(tmp_path, "[node]\nrole = 'gatewya'\n")
    out = apply(root, NODE_ID)
    assert not out.ok and out.applied == "the image's defaults"
    assert out.error is not None and out.error.startswith("/boot/firmware/eschaton.toml:2: node.role:")
    assert out.hostname == f"eschaton-{NODE_ID[:8]}"
    node = tomllib.loads((root / "etc/eschaton/node.toml").read_text())
    assert node["node"]["name"] == out.hostname
    assert not (root / LAST_GOOD).exists()


def test_no_file_uses_the_defaults_without_an_error(tmp_path: Path) -> None:
    root = boot_root(tmp_path, None)
    out = apply(root, NODE_ID)
    assert out.ok and out.applied == "the image's defaults" and out.error is None
    assert "Name=eth*\n" in (root / "etc/systemd/network/10-eschaton-mesh-0.network").read_text()
    assert "Name=en*\n" in (root / "etc/systemd/network/10-eschaton-mesh-1.network").read_text()
    assert not (root / "etc/wpa_supplicant").exists()
    # A node on its own: its own embedded chain (a village house says role = "house").
    node = parse_config((root / "etc/eschaton/node.toml").read_text(), "node.toml")
    assert node.chain.backend == "embedded" and not node.chain.discover


def test_files_of_an_earlier_configuration_are_removed(tmp_path: Path) -> None:
    root = boot_root(tmp_path, GOOD)
    apply(root, NODE_ID)
    (root / BOOT_FILE).write_text('[mesh]\ninterfaces = ["eth1"]\n')
    out = apply(root, NODE_ID)
    assert "etc/wpa_supplicant/wpa_supplicant-wlan0.conf" in out.changed
    assert not (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").exists()
    assert sorted(p.name for p in (root / "etc/systemd/network").iterdir()) == [
        "10-eschaton-bat0.netdev", "10-eschaton-bat0.network", "10-eschaton-mesh-0.network"]
    assert "Name=eth1\n" in (root / "etc/systemd/network/10-eschaton-mesh-0.network").read_text()


def test_ssh_keys_only(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmYWtla2V5ZmFrZWtleWZha2VrZXlmYQ== me@laptop"
    # The blob above names ssh-ed25519 and carries 32 bytes: a valid key line.
    parse_boot_config(f'[ssh]\nauthorized_keys = ["{key}"]\n', "e.toml")
    root = boot_root(tmp_path, f'[ssh]\nauthorized_keys = ["{key}"]\n')
    apply(root, NODE_ID)
    ak = root / "root/.ssh/authorized_keys"
    assert ak.read_text() == key + "\n"
    assert stat.S_IMODE(ak.stat().st_mode) == 0o600
    assert stat.S_IMODE(ak.parent.stat().st_mode) == 0o700
    sshd = (root / "etc/ssh/sshd_config.d/eschaton.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin prohibit-password" in sshd


def test_ibss(tmp_path: Path) -> None:
    root = boot_root(tmp_path, GOOD.replace('key = "12345678"', 'key = "12345678"\nmode = "ibss"\nchannel = 1'))
    apply(root, NODE_ID)
    text = (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    assert "mode=1" in text and "key_mgmt=WPA-PSK" in text and "frequency=2412" in text
    assert "ap_scan=2" in text


def test_an_unmounted_boot_partition_keeps_the_last_good_configuration(tmp_path: Path) -> None:
    root = boot_root(tmp_path, GOOD)
    apply(root, NODE_ID)
    out = apply(root, NODE_ID, boot_mounted=False)
    assert not out.ok and out.applied == "the last good configuration"
    assert out.error == "/boot/firmware: the boot partition is not mounted"
    assert out.changed == [] and out.hostname == "gw"
