"""``ble://``: registered so configs and the interface are ready for Bluetooth LE, but this build
has no BLE stack (bleak/BlueZ or bumble) wired in, so using it is a clear configuration error."""
from __future__ import annotations

from eschaton.net.transport.base import (
    FrameStream,
    Listener,
    OnStream,
    TransportUnavailable,
    TransportUrl,
    register_scheme,
)

MESSAGE = ("ble:// is not available in this build: no Bluetooth LE transport is compiled in "
           "(use tcp:// over Wi-Fi/mesh or serial://)")


class BleTransport:
    async def connect(self, url: TransportUrl, *, timeout: float) -> FrameStream:
        raise TransportUnavailable(f"{url.url}: {MESSAGE}")

    async def listen(self, url: TransportUrl, on_stream: OnStream) -> Listener:
        raise TransportUnavailable(f"{url.url}: {MESSAGE}")


register_scheme("ble", BleTransport())
