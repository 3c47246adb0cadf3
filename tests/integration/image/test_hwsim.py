"""The Wi-Fi mesh configuration the image generates, on simulated radios: in ONE guest of the
image, ``mac80211_hwsim`` makes two radios, each moved into a network namespace of its own; each
runs wpa_supplicant with the file ``eschaton-field`` renders from a ``[wifi]`` section (802.11s
with SAE, then an RSN IBSS), batman-adv over the radio with bridge-loop avoidance off (as the
rendered bat0.netdev says), and an HTTP fetch crosses bat0 from one namespace to the other.

What it proves: the rendered wpa_supplicant files are accepted by the image's wpa_supplicant
and form an encrypted mesh (802.11s peer link ESTAB, or an IBSS) that batman-adv runs over.
What it does not: a Raspberry Pi's radio (brcmfmac), or the boot units (the mesh test covers
those over an emulated wire). The console is used to drive this proof, as the test's own lab.
"""
from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eschaton.field.bootconf import parse_boot_config
from eschaton.field.render import render
from tests.integration.image.qemu import Console, guest_command, overlay, stop

pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.root, pytest.mark.timeout(1800)]


def wpa_conf(mode: str) -> str:
    boot = parse_boot_config(f'[wifi]\ncountry = "DE"\nmesh_id = "hwsim-village"\nkey = "correct horse"\n'
                             f'channel = 1\nmode = "{mode}"\n', "eschaton.toml")
    files = {f.path: f.text for f in render(boot, "00" * 32, "h")}
    return files["etc/wpa_supplicant/wpa_supplicant-wlan0.conf"]


@pytest.fixture()
def guest(bootable: Path, tmp_path: Path) -> Iterator[Console]:
    disk = overlay(bootable, tmp_path / "guest.qcow2")
    proc = subprocess.Popen(guest_command(bootable, disk, ["-nic", "none"]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    console = Console(proc, tmp_path / "console.log")
    try:
        yield console
    finally:
        stop(proc, console)
        print(f"serial console log: {tmp_path / 'console.log'}")


def _poll(c: Console, command: str, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        rc, out = c.run(command)
        if rc == 0 and needle in out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"{command!r}: no {needle!r} within {timeout:.0f} s:\n{out}")
        time.sleep(2)


def _mesh_pair(c: Console, mode: str) -> None:
    conf = base64.b64encode(wpa_conf(mode).encode()).decode()
    c.check(f"echo {conf} | base64 -d > /tmp/wpa-{mode}.conf")
    c.check("modprobe mac80211_hwsim radios=2 && modprobe batman-adv")
    phys = c.check("ls /sys/class/ieee80211").split()
    assert len(phys) == 2, phys
    for i, phy in enumerate(phys):
        ns = f"m{i}"
        c.check(f"ip netns add {ns} && iw phy {phy} set netns name {ns}")
        dev = c.check(f"ip netns exec {ns} ls /sys/class/net | grep -v '^lo$'").strip()
        c.check(f"ip netns exec {ns} ip link set {dev} mtu 1560")
        c.check(f"ip netns exec {ns} wpa_supplicant -B -D nl80211 -i {dev} -c /tmp/wpa-{mode}.conf "
                f"-P /run/wpa-{ns}.pid -f /tmp/wpa-{ns}.log")
        if mode == "80211s":
            _poll(c, f"ip netns exec {ns} iw dev {dev} info", "type mesh point", 60)
        else:
            _poll(c, f"ip netns exec {ns} iw dev {dev} info", "type IBSS", 60)
        c.check(f"ip netns exec {ns} sh -c 'batctl if add {dev} && batctl bl 0 && ip link set bat0 up "
                f"&& ip addr add 10.98.0.{i + 1}/24 dev bat0'")
    if mode == "80211s":
        _poll(c, "ip netns exec m0 iw dev $(ip netns exec m0 ls /sys/class/net | grep -v '^lo$' | "
                 "grep -v bat0) station dump", "mesh plink:\tESTAB", 120)
    _poll(c, "ip netns exec m0 batctl n", "wlan", 120)
    # The image has no ping (a minimal Debian): an HTTP fetch over bat0 with the image's own
    # python3 proves IP crosses the mesh, both ways of a TCP connection.
    c.check("ip netns exec m1 sh -c 'cd /tmp && python3 -m http.server --bind 10.98.0.2 8000 "
            ">/tmp/http-m1.log 2>&1 & echo $! > /run/http-m1.pid'")
    fetch = ("ip netns exec m0 python3 -c \"import urllib.request as u; "
             "print('status', u.urlopen('http://10.98.0.2:8000/', timeout=5).status)\"")
    out = _poll(c, fetch, "status 200", 120)
    print(out)
    c.check("kill $(cat /run/http-m1.pid)")
    # With a secured mesh wpa_supplicant runs the peering itself (SAE, then AMPE): a peer link
    # is ESTAB only once both ends proved the key.
    print(c.check("tail -n 20 /tmp/wpa-m0.log"))
    c.check("for p in /run/wpa-m*.pid; do kill $(cat $p); done; sleep 1; "
            "ip netns del m0; ip netns del m1; rmmod mac80211_hwsim", timeout=120)


def test_generated_wifi_mesh_config_on_hwsim_radios(guest: Console) -> None:
    started = time.monotonic()
    guest.login(600)
    for mode in ("80211s", "ibss"):
        _mesh_pair(guest, mode)
        print(f"{mode} + batman-adv over hwsim: {time.monotonic() - started:.0f} s after power-on")
    guest.send("systemctl poweroff")
    assert guest.proc.wait(timeout=300) == 0
