"""systemd readiness and watchdog notifications (sd_notify).

Hand-written rather than a dependency: the protocol is one datagram to $NOTIFY_SOCKET, and the
python-systemd binding needs libsystemd headers at install time, which an SD image build for
arm64 should not have to carry. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""
from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, if systemd asked for watchdog pings for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
