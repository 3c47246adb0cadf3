"""``[dashboard]``: the operator's web dashboard (``eschaton.dashboard``) and its ``/metrics``.

Off unless ``enabled = true``. It listens on loopback by default; a LAN or mesh address is used
only when ``listen`` names one (an installer's phone on the village Wi-Fi), never a wildcard
chosen by the node itself.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from eschaton.config import defaults as D
from eschaton.config.section import Section


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    enabled: bool
    """Serve the dashboard (and ``/metrics``)."""
    host: str
    """IP address to listen on (``listen`` without the port); loopback unless configured."""
    port: int
    """TCP port to listen on (``listen``'s port; 0 picks a free one, see ``url_file``)."""
    password_file: Path
    """File (0600) holding the scrypt hash of the dashboard password (``eschaton dashboard
    password`` writes it); without it only the API token logs in."""
    url_file: Path
    """File (0600) where the node writes the URL it serves, once listening (with ``listen``'s
    port 0, the port the system picked)."""
    login_lock_s: float = 2.0
    """The first lock-out after the free wrong passwords (doubling with each further one)."""

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


def parse_listen(s: Section, value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` with an IP literal (no names: a name could resolve to
    an address the operator did not mean to expose)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit():
        raise s.err("listen", f"must be HOST:PORT with an IP address, e.g. {D.DASHBOARD_LISTEN!r} "
                              f"(got {value!r})")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise s.err("listen", f"{host!r} is not an IP address (names are not accepted)") from None
    if ip.is_unspecified:
        raise s.err("listen", f"{host} listens on every interface: name the LAN or mesh address "
                              "the dashboard should be reachable on")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise s.err("listen", f"port {port} is out of range (0..65535)")
    return str(ip), port


def parse_dashboard(root: Section) -> DashboardConfig:
    s = root.sub("dashboard")
    enabled = s.get_bool("enabled", D.DASHBOARD_ENABLED)
    host, port = parse_listen(s, s.get_str("listen", D.DASHBOARD_LISTEN))
    password = s.get_path("password_file", D.DASHBOARD_PASSWORD_FILE)
    url_file = s.get_path("url_file", D.DASHBOARD_URL_FILE)
    if password is None:
        raise s.err("password_file", "must name a file (it need not exist yet)")
    if url_file is None:
        raise s.err("url_file", "must name a file")
    login_lock_s = s.get_float("login_lock_s", D.DASHBOARD_LOGIN_LOCK_S, 0.5, 300.0)
    s.done()
    return DashboardConfig(enabled, host, port, password, url_file, login_lock_s)
