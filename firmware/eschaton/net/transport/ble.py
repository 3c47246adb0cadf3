"""``ble://ADAPTER[/ADDRESS][?psm=N&address=A]``: Bluetooth LE links (``ble_l2cap.py``).

- ``ble://hci-socket:0`` listens on the Pi's first adapter (PSM ``0xE5`` unless ``?psm=``;
  ``?address=`` sets our random static address, else it is derived from the adapter's own).
- ``ble://hci-socket:0/F1:22:33:44:55:66?psm=229`` dials that node through our adapter.
- Tests use ``ble://tcp-client:127.0.0.1:PORT``: a bumble virtual controller on loopback.

Registered here without loading the Bluetooth stack: bumble costs about 13 MB of resident memory,
which a node that links only over TCP or serial (most houses) should not pay. A bad URL is refused
before the stack loads.
"""
from __future__ import annotations

from eschaton.core.link.ble import parse_ble_url
from eschaton.net.transport.base import (
    FrameStream,
    Listener,
    OnStream,
    TransportUrl,
    register_scheme,
)


class BleTransport:
    async def connect(self, url: TransportUrl, *, timeout: float) -> FrameStream:
        parse_ble_url(url, dial=True)
        from eschaton.net.transport import ble_l2cap
        return await ble_l2cap.connect(url, timeout=timeout)

    async def listen(self, url: TransportUrl, on_stream: OnStream) -> Listener:
        parse_ble_url(url, dial=False)
        from eschaton.net.transport import ble_l2cap
        return await ble_l2cap.listen(url, on_stream)


register_scheme("ble", BleTransport())
