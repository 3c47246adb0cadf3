"""``eschaton-mesh.service``: after systemd-networkd made bat0 and enslaved the mesh
interfaces (``render``), start the Wi-Fi mesh, apply netem, and give bat0 its address.

The address is the first candidate (``meshaddr.candidates``) no ARP probe finds in use; each
collision is reported (journal and console) and written, with the address taken, to
``/var/lib/eschaton/mesh-address.json`` for ``eschaton node status``.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from eschaton.field import atomic
from eschaton.field.apply import _ids
from eschaton.field.meshaddr import candidates
from eschaton.field.render import MESH_JSON

STATUS = "var/lib/eschaton/mesh-address.json"
MAX_CANDIDATES = 16


def choose(cands: Iterable[ipaddress.IPv4Address], taken: Callable[[ipaddress.IPv4Address], bool],
           limit: int = MAX_CANDIDATES) -> tuple[ipaddress.IPv4Address | None, list[str]]:
    """The first candidate not ``taken`` (at most ``limit`` tried), and the ones found taken."""
    collisions: list[str] = []
    for i, addr in enumerate(cands):
        if i >= limit:
            break
        if not taken(addr):
            return addr, collisions
        collisions.append(str(addr))
    return None, collisions


def _matching(pattern: str) -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if fnmatch.fnmatchcase(n, pattern))


def _wait_for(pattern: str, timeout: float) -> list[str]:
    """The interfaces matching ``pattern`` once at least one exists (empty after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not (found := _matching(pattern)):
        if time.monotonic() > deadline:
            return []
        time.sleep(0.2)
    return found


def _say(line: str) -> None:
    print(line, flush=True)
    try:
        with open("/dev/kmsg", "w") as k:
            k.write(f"<5>{line}\n")
    except OSError:
        pass


def main(root: Path) -> int:
    from eschaton.field.arp import in_use

    conf = json.loads((root / MESH_JSON).read_text())
    if conf.get("wifi"):
        subprocess.run(["systemctl", "start", "--no-block", f"wpa_supplicant@{conf['wifi']}.service"],
                       check=False)
    netem_on = [i for p in conf["interfaces"] for i in (_wait_for(p, 30) if conf.get("netem") else [])]
    for iface in netem_on:
        res = subprocess.run(["tc", "qdisc", "replace", "dev", iface, "root", "netem",
                              *conf["netem"].split()], capture_output=True, text=True, check=False)
        _say(f"eschaton-mesh: netem {conf['netem']} on {iface}" if res.returncode == 0
             else f"eschaton-mesh: netem on {iface} failed: {res.stderr.strip()}")
    if not _wait_for("bat0", 60):
        _say("eschaton-mesh: no bat0 after 60 s (is batman-adv loaded?)")
        return 1
    subprocess.run(["ip", "link", "set", "bat0", "up"], check=False)
    prefix = ipaddress.IPv4Network(conf["prefix"])
    fixed = conf.get("address")
    cands = [ipaddress.IPv4Address(fixed)] if fixed else candidates(bytes.fromhex(conf["node_id"]), prefix)
    addr, collisions = choose(cands, lambda a: in_use("bat0", a))
    for c in collisions:
        _say(f"eschaton-mesh: {c} is already in use on the mesh" + ("" if fixed else ", trying the next"))
    result = {"address": str(addr) if addr else None, "prefix": str(prefix), "collisions": collisions}
    if addr is not None:
        # "broadcast +": without it the address has no broadcast address, and discovery (which
        # beacons to each interface's broadcast address) would send nothing on the mesh.
        res = subprocess.run(["ip", "addr", "replace", f"{addr}/{prefix.prefixlen}", "broadcast", "+",
                              "dev", "bat0"],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            _say(f"eschaton-mesh: ip addr on bat0 failed: {res.stderr.strip()}")
            return 1
        _say(f"eschaton-mesh: bat0 is {addr}/{prefix.prefixlen}")
    else:
        _say("eschaton-mesh: no free mesh address: bat0 has none")
    status = root / STATUS
    if status.parent.exists():
        atomic.write_atomic(status, json.dumps(result) + "\n", 0o600,
                            uid=_ids(root, "passwd", "eschaton"), gid=_ids(root, "group", "eschaton"),
                            dir_mode=0o700)
    return 0 if addr is not None else 1
