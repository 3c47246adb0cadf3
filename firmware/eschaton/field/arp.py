"""An ARP probe (RFC 5227): is an IPv4 address in use on a segment? Sent before bat0 takes an
address, so two nodes whose derived addresses collide notice it (over batman-adv, ARP
broadcasts reach the whole mesh).

A probe is an ARP request with sender address 0.0.0.0 for the candidate. The address is in use
when, while probing, an ARP packet arrives whose sender address is the candidate (its owner
answering, or batman-adv's distributed ARP table answering for it), or another node's probe for
the same candidate (two nodes choosing at once: both move on).
"""
from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from pathlib import Path

ETH_P_ARP = 0x0806
_BROADCAST = b"\xff" * 6


def mac_of(iface: str) -> bytes:
    return bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))


def _probe_frame(mac: bytes, target: ipaddress.IPv4Address) -> bytes:
    eth = _BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, bytes(4), bytes(6), target.packed)
    return eth + arp


def conflicts(frame: bytes, mac: bytes, target: ipaddress.IPv4Address) -> bool:
    """Whether a received Ethernet frame says ``target`` is taken (RFC 5227, 2.1.1)."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return False
    _ht, pt, hl, pl, op, sha, spa, _tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    if pt != 0x0800 or hl != 6 or pl != 4 or sha == mac:
        return False
    if spa == target.packed:
        return True
    return bool(op == 1 and spa == bytes(4) and tpa == target.packed)  # another node probing for it


def in_use(iface: str, target: ipaddress.IPv4Address, *, probes: int = 3,
           interval: float = 1.0) -> bool:
    """Send ``probes`` probes ``interval`` s apart on ``iface`` and listen until ``interval``
    after the last; True as soon as anything says ``target`` is taken."""
    mac = mac_of(iface)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((iface, ETH_P_ARP))
        frame = _probe_frame(mac, target)
        for _ in range(probes):
            try:
                s.send(frame)
            except OSError:
                pass  # no carrier (bat0 with no interface yet): nobody can answer, keep listening
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([s], [], [], left)
                if ready and conflicts(s.recv(2048), mac, target):
                    return True
    return False
