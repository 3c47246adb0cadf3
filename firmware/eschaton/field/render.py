"""The files a checked ``BootConfig`` becomes, as (path under the root, text, mode): pure, so
the same input gives the same bytes at every boot (and a rewrite is a no-op).

- ``/etc/eschaton/node.toml``: the node's configuration.
- ``/etc/hostname``, ``/etc/hosts``.
- systemd-networkd: ``bat0`` (batman-adv, bridge-loop avoidance off: it holds broadcasts, and
  so ARP and the node's beacons, for about 35 s after bat0 comes up) and one ``.network`` per
  mesh interface enslaving it to bat0. Named ``10-eschaton-*`` so they sort before the image's
  ``20-wired.network`` (DHCP on eth*), which networkd would otherwise pick for eth0.
- ``/etc/wpa_supplicant/wpa_supplicant-<wlan>.conf`` for ``wpa_supplicant@<wlan>.service``:
  802.11s with SAE and 802.11w (``mesh_fwding=0``: batman-adv routes, not 802.11s), or an
  RSN IBSS.
- ``/etc/eschaton/mesh.json``: what ``eschaton-mesh.service`` needs at boot (bat0's address
  candidates, netem).
- SSH: ``/root/.ssh/authorized_keys`` and an sshd drop-in allowing keys only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from eschaton.field.bootconf import BootConfig, WifiConfig

NETWORKD = "etc/systemd/network"
NETWORKD_PREFIX = "10-eschaton-"
WPA_DIR = "etc/wpa_supplicant"
MESH_JSON = "etc/eschaton/mesh.json"


@dataclass(frozen=True, slots=True)
class File:
    path: str
    """Relative to the root (``etc/hostname``)."""
    text: str
    mode: int
    group: str | None = None
    """Owned by this group (root otherwise)."""


def _wpa_conf(w: WifiConfig) -> str:
    head = ("# Written at boot by eschaton-field from [wifi] of eschaton.toml.\n"
            "ctrl_interface=DIR=/run/wpa_supplicant\n"
            f"country={w.country}\n"
            "update_config=0\n"
            "p2p_disabled=1\n")
    ssid = json.dumps(w.mesh_id)  # the parser refused '"' and control characters
    key = json.dumps(w.key)
    if w.mode == "80211s":
        return head + ("\nnetwork={\n"
                       f"\tssid={ssid}\n"
                       "\tmode=5\n"
                       f"\tfrequency={w.frequency}\n"
                       "\tkey_mgmt=SAE\n"
                       f"\tsae_password={key}\n"
                       "\tieee80211w=2\n"
                       "\tmesh_fwding=0\n"
                       "}\n")
    return head + ("ap_scan=2\n\nnetwork={\n"
                   f"\tssid={ssid}\n"
                   "\tmode=1\n"
                   f"\tfrequency={w.frequency}\n"
                   "\tproto=RSN\n"
                   "\tkey_mgmt=WPA-PSK\n"
                   "\tpairwise=CCMP\n"
                   "\tgroup=CCMP\n"
                   f"\tpsk={key}\n"
                   "}\n")


def render(boot: BootConfig, node_id_hex: str, hostname: str) -> list[File]:
    """Every file the configuration sets, for the node ``node_id_hex`` called ``hostname``."""
    files = [
        File("etc/eschaton/node.toml", boot.node_toml(hostname), 0o640, "eschaton"),
        File("etc/hostname", hostname + "\n", 0o644),
        File("etc/hosts", "127.0.0.1\tlocalhost\n"
                          f"127.0.1.1\t{hostname}\n"
                          "::1\t\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
        File(f"{NETWORKD}/{NETWORKD_PREFIX}bat0.netdev",
             "# Written at boot by eschaton-field ([mesh] of eschaton.toml).\n"
             "[NetDev]\nName=bat0\nKind=batadv\n\n"
             "[BatmanAdvanced]\nBridgeLoopAvoidance=false\nGatewayMode=off\n", 0o644),
        # No address here: eschaton-mesh.service probes for a free one first (RFC 5227) and adds
        # it; KeepConfiguration keeps networkd from removing an address it did not set.
        File(f"{NETWORKD}/{NETWORKD_PREFIX}bat0.network",
             "# Written at boot by eschaton-field ([mesh] of eschaton.toml).\n"
             "[Match]\nName=bat0\n\n"
             "[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n"
             "KeepConfiguration=static\n", 0o644),
    ]
    for i, iface in enumerate(boot.mesh.interfaces):
        files.append(File(
            f"{NETWORKD}/{NETWORKD_PREFIX}mesh-{i}.network",
            "# Written at boot by eschaton-field ([mesh] interfaces of eschaton.toml).\n"
            f"[Match]\nName={iface}\n\n"
            "[Network]\nBatmanAdvanced=bat0\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
            "ConfigureWithoutCarrier=yes\n", 0o644))
    if boot.wifi is not None:
        files.append(File(f"{WPA_DIR}/wpa_supplicant-{boot.wifi.interface}.conf",
                          _wpa_conf(boot.wifi), 0o600))
    mesh = {
        "node_id": node_id_hex,
        "prefix": str(boot.mesh.prefix),
        "address": str(boot.mesh.address) if boot.mesh.address else None,
        "interfaces": list(boot.mesh.interfaces),
        "netem": boot.mesh.netem,
        "wifi": boot.wifi.interface if boot.wifi else None,
    }
    files.append(File(MESH_JSON, json.dumps(mesh, indent=1, sort_keys=True) + "\n", 0o644))
    files.append(File("root/.ssh/authorized_keys",
                      "".join(k + "\n" for k in boot.authorized_keys), 0o600))
    files.append(File("etc/ssh/sshd_config.d/eschaton.conf",
                      "# Written at boot by eschaton-field: keys only ([ssh] of eschaton.toml).\n"
                      "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                      "PermitRootLogin prohibit-password\n", 0o644))
    return files

