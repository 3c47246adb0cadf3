"""``eschaton.toml`` on the boot partition: parse and check it, with file, line and key in every
error (the same ``ConfigError`` as the node's own configuration).

The file has the image's own sections, ``[node]`` (role, name), ``[wifi]``, ``[mesh]``, ``[ssh]``
and ``[chain]``, and any of the node's sections (``[network]``, ``[[meter]]``, ``[[valve]]``,
``[microgrid]``, ...), which go to ``/etc/eschaton/node.toml`` as written. That node
configuration is then checked by the node's one config reader (``eschaton.config``), and its
errors are reported against the line of ``eschaton.toml`` they come from: the installer edits
one file and every mistake names a line of it.
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import ipaddress
import re
import struct
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eschaton.config import ConfigContext, ConfigError, find_line, parse_config
from eschaton.config import defaults as D
from eschaton.config.section import Section
from eschaton.field import toml_out

ROLES = ("house", "gateway")
WIFI_MODES = ("80211s", "ibss")
# 5 GHz channels without DFS: a mesh point does no radar detection, so it may not use the others.
CHANNELS_5GHZ = (36, 40, 44, 48, 149, 153, 157, 161, 165)
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                 "sk-ecdsa-sha2-nistp256@openssh.com")
OWN_SECTIONS = ("node", "wifi", "mesh", "ssh", "chain")
DEFAULT_PREFIX = "10.99.0.0/16"
CHAIN_SERVE = "tcp://0.0.0.0:50001"
"""Where a gateway serves its chain by default: every address, so its mesh address (chosen at
boot) is among them."""
LISTEN = "tcp://0.0.0.0:9735"
NODE_DATADIR = D.DATADIR

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_IFPATTERN = re.compile(r"[A-Za-z0-9_.*?-]{1,15}")
WIRED = ("eth*", "en*")
"""The default mesh interfaces without Wi-Fi: every wired one (a Pi 4's is ``end0`` or
``eth0`` depending on the systemd version, a USB adapter ``enx...``, QEMU's ``enp0s1``)."""
_COUNTRY = re.compile(r"[A-Z]{2}")
# tc-netem(8) arguments, each keyword with the shapes of the values that may follow it.
_TIME = r"\d+(\.\d+)?(us|usec|ms|msec|s|sec)"
_PCT = r"\d+(\.\d+)?%"
_RATE = r"\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)"
_NETEM: dict[str, tuple[str, ...]] = {
    "delay": (_TIME, _TIME, _PCT), "loss": (_PCT, _PCT), "duplicate": (_PCT, _PCT),
    "corrupt": (_PCT, _PCT), "reorder": (_PCT, _PCT), "rate": (_RATE,), "limit": (r"\d+",),
}


@dataclass(frozen=True, slots=True)
class WifiConfig:
    country: str
    """ISO 3166 country code: the regulatory domain (allowed channels and power)."""
    mesh_id: str
    """The 802.11s mesh id (or the IBSS SSID); every node of the village uses the same."""
    key: str
    """The shared password: SAE for 802.11s, WPA-PSK (RSN) for IBSS."""
    channel: int
    """1-14 (2.4 GHz) or a 5 GHz channel without DFS."""
    mode: str
    """``80211s`` (wpa_supplicant mesh mode, SAE) or ``ibss`` (ad-hoc)."""
    interface: str
    """The radio, ``wlan0``."""

    @property
    def frequency(self) -> int:
        """The channel's centre frequency in MHz, as wpa_supplicant wants it."""
        if self.channel == 14:
            return 2484
        return 2407 + 5 * self.channel if self.channel <= 13 else 5000 + 5 * self.channel


@dataclass(frozen=True, slots=True)
class MeshConfig:
    interfaces: tuple[str, ...]
    """The interfaces batman-adv runs over (enslaved to bat0); shell patterns (``en*``) allowed,
    as systemd-networkd's ``[Match] Name=``."""
    prefix: ipaddress.IPv4Network
    """bat0's address is chosen inside it, from the node id (or ``address``)."""
    address: ipaddress.IPv4Address | None
    """A fixed bat0 address instead of the derived one (still checked for a collision)."""
    netem: str | None
    """tc-netem arguments applied to every mesh interface (labs and emulation)."""


@dataclass(frozen=True, slots=True)
class BootConfig:
    source: str
    """The file it was read from (for messages)."""
    role: str
    """``house`` or ``gateway`` (the gateway serves the village's chain)."""
    name: str | None
    """Hostname and node name; None: derived from the node id at boot."""
    wifi: WifiConfig | None
    mesh: MeshConfig
    authorized_keys: tuple[str, ...]
    node_doc: dict[str, Any]
    """The node's configuration (``node.toml``) as a TOML document, already checked by the node's
    config reader; ``[node] name`` is filled in at boot when ``name`` is None."""

    def node_toml(self, name: str) -> str:
        """``/etc/eschaton/node.toml`` for a node called ``name``."""
        doc = dict(self.node_doc)
        doc["node"] = {**doc["node"], "name": name}
        return ("# Written at boot by eschaton-field from eschaton.toml on the boot partition: edit "
                "that file, not this one.\n" + toml_out.dumps(doc))


def _parse_wifi(root: Section) -> WifiConfig | None:
    if "wifi" not in root.table:
        root.used.add("wifi")
        return None
    s = root.sub("wifi")
    for key in ("country", "mesh_id", "key"):
        if key not in s.table:
            raise s.err(key, "is required in [wifi]")
    country = s.get_str("country", "")
    if not _COUNTRY.fullmatch(country):
        raise s.err("country", f"must be a two-letter ISO 3166 code in capitals, like \"KE\" (got {country!r})")
    mesh_id = s.get_str("mesh_id", "")
    if not 1 <= len(mesh_id.encode()) <= 32:
        raise s.err("mesh_id", "must be 1 to 32 bytes")
    if any(ord(c) < 0x20 or c == '"' for c in mesh_id):
        raise s.err("mesh_id", "must not contain control characters or '\"'")
    key = s.get_str("key", "")
    if not 8 <= len(key) <= 63 or not all(0x20 <= ord(c) < 0x7F for c in key) or '"' in key:
        raise s.err("key", "must be 8 to 63 printable ASCII characters, without '\"'")
    channel = s.get_int("channel", 6, 1, 165)
    if not (channel <= 14 or channel in CHANNELS_5GHZ):
        raise s.err("channel", "must be 1-14 (2.4 GHz) or a 5 GHz channel without radar detection: "
                               + ", ".join(map(str, CHANNELS_5GHZ)))
    mode = s.get_choice("mode", "80211s", WIFI_MODES)
    iface = s.get_str("interface", "wlan0")
    if not _IFNAME.fullmatch(iface):
        raise s.err("interface", f"{iface!r} is not an interface name")
    s.done()
    return WifiConfig(country, mesh_id, key, channel, mode, iface)


def check_netem(s: Section, key: str, text: str) -> str:
    """tc-netem arguments, e.g. ``loss 5% delay 20ms 5ms``: keywords and value shapes only (tc
    itself is not run here)."""
    words = text.split()
    if not words:
        raise s.err(key, "is empty (leave it out for no link emulation)")
    i = 0
    while i < len(words):
        kw = words[i]
        shapes = _NETEM.get(kw)
        if shapes is None:
            raise s.err(key, f"{kw!r} is not a netem setting (one of {', '.join(_NETEM)})")
        i += 1
        taken = 0
        for shape in shapes:
            if i < len(words) and re.fullmatch(shape, words[i]):
                i += 1
                taken += 1
            else:
                break
        if taken == 0:
            raise s.err(key, f"{kw} needs a value, e.g. "
                             + {"delay": "delay 20ms", "rate": "rate 1mbit", "limit": "limit 1000"}
                             .get(kw, f"{kw} 5%"))
    return " ".join(words)


def _parse_mesh(root: Section, wifi: WifiConfig | None) -> MeshConfig:
    s = root.sub("mesh")
    ifaces = s.get_str_list("interfaces", (wifi.interface,) if wifi else WIRED)
    if not ifaces:
        raise s.err("interfaces", "must name at least one interface")
    for i, name in enumerate(ifaces):
        if not _IFPATTERN.fullmatch(name) or fnmatch.fnmatchcase("bat0", name):
            raise s.err("interfaces", f"{name!r} is not an interface (or a pattern like \"en*\") "
                                      "batman-adv can use")
        if name in ifaces[:i]:
            raise s.err("interfaces", f"names {name} twice")
    if wifi is not None and wifi.interface not in ifaces:
        raise s.err("interfaces", f"must include {wifi.interface}: [wifi] sets up the radio for the mesh")
    raw_prefix = s.get_str("prefix", DEFAULT_PREFIX)
    try:
        prefix = ipaddress.IPv4Network(raw_prefix)
    except ValueError as exc:
        raise s.err("prefix", f"not an IPv4 network like 10.99.0.0/16: {exc}") from None
    if not 8 <= prefix.prefixlen <= 29:
        raise s.err("prefix", "must be /8 to /29")
    address: ipaddress.IPv4Address | None = None
    raw_addr = s.get_str("address", "")
    if raw_addr:
        try:
            address = ipaddress.IPv4Address(raw_addr)
        except ValueError:
            raise s.err("address", f"{raw_addr!r} is not an IPv4 address") from None
        if address not in prefix or address in (prefix.network_address, prefix.broadcast_address):
            raise s.err("address", f"must be a host address inside prefix {prefix}")
    raw_netem = s.get_str("netem", "")
    netem = check_netem(s, "netem", raw_netem) if "netem" in s.table else None
    s.done()
    return MeshConfig(tuple(ifaces), prefix, address, netem)


def check_ssh_key(s: Section, index: int, line: str) -> str:
    """One authorized_keys line: ``TYPE BASE64 [COMMENT]``, the blob naming the same type."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise s.err(index, "must be a public key line \"TYPE BASE64 [COMMENT]\", TYPE one of "
                           + ", ".join(SSH_KEY_TYPES) + " (options are not accepted)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        named = blob[4:4 + n].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        raise s.err(index, "the key is not valid base64 of an SSH public key") from None
    if named != parts[0]:
        raise s.err(index, f"the key says {named!r} inside but {parts[0]!r} in front")
    if "\n" in line or "\r" in line:
        raise s.err(index, "must be one line")
    return " ".join(parts)


def _parse_ssh(root: Section) -> tuple[str, ...]:
    s = root.sub("ssh")
    keys = s.get_str_list("authorized_keys", ())
    key_section = Section(s.ctx, (*s.path, "authorized_keys"), {})
    checked = tuple(check_ssh_key(key_section, i, k) for i, k in enumerate(keys))
    s.done()
    return checked


def _chain_doc(root: Section, role: str) -> dict[str, Any]:
    """The node's ``[chain]``: what the file says, over the role's defaults. Its keys are the
    node's (checked by the node's reader below)."""
    s = root.sub("chain")
    s.used.update(s.table)
    given = dict(s.table)
    if role == "gateway":
        base: dict[str, Any] = {"backend": "embedded", "network": "regtest", "serve": CHAIN_SERVE}
        if given.get("backend", "embedded") != "embedded":
            raise s.err("backend", "a gateway serves its own embedded chain (leave backend out)")
    elif "backend" in given:
        base = {}
    elif "url" in given:
        base = {"backend": "electrum"}
    else:
        # A house follows the chain its village's gateway announces (eschaton.net.chainfind).
        base = {"backend": "electrum", "discover": True}
    return {**base, **given}


def _path_of(dotted_key: str) -> tuple[str | int, ...]:
    return tuple(int(i) if i else k for k, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", dotted_key))


def parse_boot_config(text: str, source: str = "eschaton.toml") -> BootConfig:
    """Check ``text`` (the contents of ``source``); raises ``ConfigError`` naming file, line, key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(source, "", f"not valid TOML: {exc}", int(m.group(1)) if m else None) from None
    root = Section(ConfigContext(source, text, Path(NODE_DATADIR)), (), doc)
    for key, v in doc.items():
        if not isinstance(v, dict | list):
            raise root.err(key, "must be inside a section (a [table]), not at the top of the file")
    node_s = root.sub("node")
    role = node_s.get_choice("role", "house", ROLES)
    name: str | None = node_s.get_str("name", "") or None
    if name is not None and not _HOSTNAME.fullmatch(name):
        raise node_s.err("name", "must be a hostname: 1-63 lower-case letters, digits and '-', "
                                 "not starting or ending with '-'")
    if "datadir" in node_s.table:
        raise node_s.err("datadir", f"is fixed in the image ({NODE_DATADIR})")
    node_s.done()
    wifi = _parse_wifi(root)
    mesh = _parse_mesh(root, wifi)
    keys = _parse_ssh(root)
    chain = _chain_doc(root, role)
    node_doc: dict[str, Any] = {k: v for k, v in doc.items() if k not in OWN_SECTIONS}
    node_doc = {"node": {"datadir": NODE_DATADIR, "name": name or ""}, **node_doc, "chain": chain}
    node_doc.setdefault("network", {"listen": [LISTEN], "discovery": {"enabled": True}})
    _check_with_node_reader(node_doc, text, source)
    return BootConfig(source, role, name, wifi, mesh, keys, node_doc)


def _check_with_node_reader(node_doc: dict[str, Any], text: str, source: str) -> None:
    """The node's own reader checks the node's sections; its error is moved onto the line of
    ``eschaton.toml`` the key is on (the generated file's lines mean nothing to the installer)."""
    generated = toml_out.dumps(node_doc)
    try:
        parse_config(generated, "node.toml")
    except ConfigError as exc:
        where = f"node.toml:{exc.line}" if exc.line else "node.toml"
        msg = str(exc).removeprefix(f"{where}: ").removeprefix(f"{exc.key}: ")
        path = _path_of(exc.key)
        raise ConfigError(source, exc.key, msg, find_line(text, path) if path else None) from None


def load_boot_config(path: str | Path) -> BootConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "", "does not exist") from None
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None
    return parse_boot_config(text, str(p))
