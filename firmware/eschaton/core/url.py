"""Transport URLs (``tcp://host:port``, ``serial:///dev/ttyAMA0?baud=115200``, ...), parsed
without I/O so that the configuration can check them without loading the transports.

``SCHEMES`` is every scheme this build has a transport for; ``net.transport`` registers exactly
these (a test holds the two together).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from eschaton.errors import LocalError

SCHEMES = ("ble", "mem", "serial", "tcp", "udp")


class BadTransportUrl(LocalError):
    """A transport URL that cannot be used (unknown scheme, missing port, bad option)."""


@dataclass(frozen=True, slots=True)
class TransportUrl:
    """A parsed transport URL."""

    url: str
    scheme: str
    host: str
    port: int | None
    path: str
    query: dict[str, str] = field(default_factory=dict)
    netloc: str = ""
    """The raw authority part (e.g. a BLE address ``AA:BB:CC:DD:EE:FF``)."""

    def require_port(self, *, allow_zero: bool = False) -> int:
        lo = 0 if allow_zero else 1
        if self.port is None:
            raise BadTransportUrl(f"{self.url}: needs a port {lo}..65535")
        if self.port == -1:
            raise BadTransportUrl(f"{self.url}: the port must be a number in {lo}..65535")
        if not lo <= self.port <= 65535:
            raise BadTransportUrl(f"{self.url}: the port is out of range {lo}..65535")
        return self.port


def parse_url(url: str) -> TransportUrl:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BadTransportUrl(f"{url!r}: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        # Digits only: above 65535 (65536 stands for all of them, so that require_port says "out
        # of range"); anything else is not a number (-1). Only schemes that need a port complain.
        port = 65536 if parts.netloc.rpartition(":")[2].isdigit() else -1
    if not parts.scheme:
        raise BadTransportUrl(f"{url!r}: missing scheme (e.g. tcp://host:port)")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return TransportUrl(url, parts.scheme.lower(), parts.hostname or "", port, parts.path, query,
                        parts.netloc)
