"""One Bluetooth LE host stack per adapter, shared by the ``ble://`` listener, dials and BLE
discovery of a node (they all speak through the same controller).

Why bumble and not bleak/BlueZ: bumble is a complete host stack in Python (HCI, L2CAP with LE
credit-based channels, GATT, advertising, scanning) that talks to a controller through an HCI
transport. On a Pi that transport is ``hci-socket:0`` (the kernel's HCI user channel: the
adapter must be down and not managed by bluetoothd); in tests it is a bumble virtual controller
reached over loopback TCP (``tcp-client:127.0.0.1:PORT``). The same code runs in both places,
with no D-Bus daemon and no test-only implementation. bleak only offers a GATT central (no
peripheral role, no L2CAP channels) and would need BlueZ, which this machine's kernel cannot run.

A host whose HCI transport is lost (the adapter reset, the virtual controller went away) is
marked dead: its streams end, and the next ``acquire`` opens the adapter afresh.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bumble import hci
from bumble.core import BaseBumbleError, PhysicalTransport
from bumble.device import Advertisement, Connection, Device
from bumble.transport import open_transport

from eschaton.core.link.ble import static_address
from eschaton.errors import LocalError, TransientError

log = logging.getLogger(__name__)
OPEN_TIMEOUT = 10.0  # s for an adapter to open and answer the reset
# Advertising every 200 ms: a dial waits for the peer's next advertisement (bumble's default of
# 1 s made every link take a second to open). Scanning a quarter of the time: on a Pi the
# Bluetooth and Wi-Fi radios share one antenna, and a continuous scan starves the Wi-Fi mesh.
ADVERTISING_INTERVAL_MS = 200
SCAN_INTERVAL_MS, SCAN_WINDOW_MS = 240, 60


class BleUnavailable(LocalError):
    """No Bluetooth adapter can be opened with this spec (wrong spec, no kernel support)."""


class BleHostLost(TransientError):
    """The adapter went away (reset, unplugged, the virtual controller stopped)."""


class BleHost:
    """An opened adapter: a bumble ``Device`` powered on, with our random static address."""

    def __init__(self, spec: str, device: Device, transport: Any) -> None:
        self.spec = spec
        self.device = device
        self._transport = transport
        self.lost: asyncio.Future[None] = transport.source.terminated
        """Done when the HCI transport is gone."""
        self.address = str(device.random_address).split("/")[0]
        self.advert: bytes | None = None
        self._connecting = asyncio.Lock()  # a controller has one pending connection at a time
        device.on("disconnection", lambda *_: self._readvertise())
        device.on("connection", self._on_connection)

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    async def connect(self, address: str, *, timeout: float) -> Connection:
        addr = hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS)
        async with self._connecting:
            return await self.device.connect(addr, transport=PhysicalTransport.LE,
                                             timeout=timeout)

    async def advertise(self, data: bytes) -> None:
        """Advertise ``data`` (connectable) until the host closes; restarted after each link,
        since a controller stops advertising when a central connects."""
        self.advert = data
        if self.device.is_advertising:
            await self.device.stop_advertising()
        await self.device.start_advertising(advertising_data=data, auto_restart=True,
                                            advertising_interval_min=ADVERTISING_INTERVAL_MS,
                                            advertising_interval_max=ADVERTISING_INTERVAL_MS)

    def _on_connection(self, connection: Connection) -> None:
        # A controller stops advertising when a central connects. A mesh node must stay
        # reachable by its other neighbours, so advertise again at once (controllers able to
        # advertise while connected, the Pi's among them, accept this; one that cannot refuses
        # and bumble restarts advertising when the connection ends).
        if connection.role == hci.Role.PERIPHERAL and self.advert is not None:
            task = asyncio.get_running_loop().create_task(self._advertise_again())
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _advertise_again(self) -> None:
        # bumble advertises through an extended advertising set where the controller has them
        # (Bluetooth 5), else with the legacy commands (a Pi Zero 2 W's 4.2 controller).
        advertiser: Any = self.device.legacy_advertising_set or self.device.legacy_advertiser
        if advertiser is None or not self.alive:
            return
        try:
            await advertiser.start()
        except (BaseBumbleError, hci.HCI_Error, OSError) as exc:
            log.debug("%s: cannot advertise while connected: %s", self.spec, exc)

    def _readvertise(self) -> None:
        if self.advert is not None and self.alive and not self.device.is_advertising:
            task = asyncio.get_running_loop().create_task(self._restart_advertising())
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _restart_advertising(self) -> None:
        with contextlib.suppress(BaseBumbleError, hci.HCI_Error, OSError):
            if self.advert is not None and not self.device.is_advertising:
                await self.device.start_advertising(
                    advertising_data=self.advert, auto_restart=True,
                    advertising_interval_min=ADVERTISING_INTERVAL_MS,
                    advertising_interval_max=ADVERTISING_INTERVAL_MS)

    async def scan(self, on_advert: Callable[[Advertisement], None]) -> None:
        self.device.on("advertisement", on_advert)
        await self.device.start_scanning(filter_duplicates=False, scan_interval=SCAN_INTERVAL_MS,
                                         scan_window=SCAN_WINDOW_MS)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the transport may already be gone
            await self.device.power_off()
        with contextlib.suppress(Exception):
            await self._transport.close()


_hosts: dict[str, BleHost] = {}
_opening: dict[str, asyncio.Lock] = {}
_background: set[asyncio.Task[None]] = set()


async def acquire(spec: str, *, address: str | None = None) -> BleHost:
    """The process's host on adapter ``spec``, opened on first use. ``address``: our random
    static address; by default one derived from the controller's public address (stable across
    restarts, so peers can name us in their config)."""
    lock = _opening.setdefault(spec, asyncio.Lock())
    async with lock:
        host = _hosts.get(spec)
        if host is not None and host.alive:
            return host
        host = await asyncio.wait_for(_open(spec, address), OPEN_TIMEOUT)
        _hosts[spec] = host
        return host


async def _open(spec: str, address: str | None) -> BleHost:
    try:
        transport = await open_transport(spec)
    except (OSError, ValueError, BaseBumbleError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise BleUnavailable(f"no Bluetooth adapter at {spec!r}: {what}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. libusb's own errors for usb: specs
        raise BleUnavailable(f"no Bluetooth adapter at {spec!r}: {type(exc).__name__} {exc}") \
            from None
    device = Device.with_hci("eschaton", hci.Address(address) if address else hci.Address.ANY_RANDOM,
                             transport.source, transport.sink)
    try:
        await device.power_on()
        if address is None:
            public = bytes(device.public_address)[::-1]  # bumble stores addresses little-endian
            if public != bytes(6):
                derived = hci.Address(static_address(public), hci.Address.RANDOM_DEVICE_ADDRESS)
                device.static_address = derived
                device.random_address = derived
                await device.send_command(hci.HCI_LE_Set_Random_Address_Command(
                    random_address=derived), check_result=True)
    except (BaseBumbleError, hci.HCI_Error, OSError) as exc:
        with contextlib.suppress(Exception):
            await transport.close()
        raise BleUnavailable(f"Bluetooth adapter at {spec!r} did not start: {exc}") from None
    host = BleHost(spec, device, transport)
    log.info("Bluetooth LE adapter %s up, address %s", spec, host.address)
    return host


async def close_all() -> None:
    """Power off and close every adapter this process opened (a node stopping: a real
    controller would otherwise go on advertising a node that is gone)."""
    hosts = list(_hosts.values())
    _hosts.clear()
    for host in hosts:
        await host.close()
