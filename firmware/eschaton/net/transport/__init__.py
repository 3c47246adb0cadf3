"""Transports chosen by URL. Importing this package registers every scheme.

    stream = await connect("tcp://10.0.0.2:9735")
    listener = await listen("serial:///dev/ttyAMA0?baud=115200", on_stream)
"""
from __future__ import annotations

from eschaton.net.transport import ble, mem, serial, tcp, udp  # noqa: F401 - registration
from eschaton.net.transport.base import (
    BadTransportUrl,
    FrameStream,
    Listener,
    OnStream,
    Transport,
    TransportClosed,
    TransportError,
    TransportUnavailable,
    TransportUrl,
    connect,
    listen,
    parse_url,
    register_scheme,
    schemes,
)

__all__ = [
    "BadTransportUrl", "FrameStream", "Listener", "OnStream", "Transport", "TransportClosed",
    "TransportError", "TransportUnavailable", "TransportUrl", "connect", "listen", "parse_url",
    "register_scheme", "schemes",
]
