"""Neighbour discovery over Bluetooth LE advertisements, beside (not instead of) UDP beacons.

A node with ``[network.discovery] ble = true`` and a ``ble://`` listener:
- advertises ``core/link/ble.encode_advert``: our service UUID, its PSM and the first 8 bytes
  of its node id (a legacy advertisement has room for no more);
- serves its signed beacon (``core/link/beacon.make_beacon``) as a readable GATT
  characteristic, made afresh on each read (a new ``seq``), so the reader's ``NeighbourTable``
  applies the same signature and replay checks as to a UDP beacon;
- scans. For an advertisement of ours from a node it should dial (the lower id dials, judged on
  the prefix, ``core/link/ble.dialler``) that it has not identified yet, or that the mesh
  wants again (not linked, not being dialled), it connects, reads the beacon, disconnects and
  hands the table's events to the mesh, with the URL set to dial that node through our own
  adapter (``ble://ADAPTER/ADDRESS?psm=N``). The address is the one we connected to, not one
  the beacon claims. Advertisements of nodes already in the table only keep them from expiring.

Caps: at most ``MAX_NEIGHBOURS`` nodes in the table (a controller has a handful of connection
slots), one probe at a time (a controller has one pending connection), each address probed at
most once per ``interval``. Probe failures are counted and logged at debug level: anyone in range
can advertise our UUID.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from bumble.core import UUID, BaseBumbleError
from bumble.device import Advertisement, Peer
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import HCI_Error

from eschaton.core.link.beacon import (
    NeighbourChanged,
    NeighbourEvent,
    NeighbourFound,
    NeighbourTable,
    make_beacon,
)
from eschaton.core.link.ble import (
    BEACON_CHAR_UUID,
    PREFIX_LEN,
    SERVICE_UUID,
    BleAdvertError,
    dialler,
    encode_advert,
    parse_advert,
    parse_ble_url,
)
from eschaton.core.link.identity import NodeId, NodeKeys
from eschaton.core.url import parse_url
from eschaton.core.wire.errors import WireError
from eschaton.net import blehost

log = logging.getLogger(__name__)
MAX_NEIGHBOURS = 8
_MAX_REMEMBERED = 256  # addresses and prefixes kept between probes
PROBE_TIMEOUT = 8.0  # s to connect, read the beacon and leave
_ERRORS = (BaseBumbleError, HCI_Error, OSError, TimeoutError, WireError)


class BleDiscovery:
    """Advertises, scans and reports neighbours to ``on_event`` (the mesh's beacon handler)."""

    def __init__(self, keys: NodeKeys, listen_url: str, *, name: str, interval: float,
                 expiry: float, on_event: Callable[[NeighbourEvent], None],
                 wants: Callable[[NodeId], bool],
                 wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        u = parse_ble_url(parse_url(listen_url))
        assert u.peer is not None, "the listener's bound URL names our address"
        self.keys = keys
        self.adapter, self.address, self.psm = u.adapter, u.peer, u.psm
        self.name = name
        self.interval = interval
        self._on_event = on_event
        self._wants = wants
        self._clock = wall_clock
        self._mono = monotonic
        self.table = NeighbourTable(keys.node_id, expiry=expiry, max_neighbours=MAX_NEIGHBOURS)
        self._seq = 0
        self._by_prefix: dict[bytes, NodeId] = {}
        self._probed: dict[str, float] = {}  # address -> monotonic time of the last probe
        self._probe: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.refused = 0
        """Advertisements or beacons refused (malformed, badly signed, replayed, unreachable)."""

    async def start(self) -> None:
        host = await blehost.acquire(self.adapter)  # the listener opened it; fails if it is gone
        await self._setup(host)
        self._task = asyncio.get_running_loop().create_task(self._run(host))

    async def close(self) -> None:
        for task in (self._task, self._probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _beacon(self, _connection: object) -> bytes:
        self._seq += 1
        return make_beacon(self.keys, urls=[f"ble://{self.address}?psm={self.psm}"],
                           ts_ms=int(self._clock() * 1000), seq=self._seq, name=self.name)

    async def _setup(self, host: blehost.BleHost) -> None:
        char: Characteristic[bytes] = Characteristic(BEACON_CHAR_UUID, Characteristic.Properties.READ,
                              Characteristic.READABLE, CharacteristicValue(read=self._beacon))
        host.device.add_service(Service(SERVICE_UUID, [char]))
        await host.advertise(encode_advert(self.keys.node_id.raw, self.psm))
        await host.scan(lambda adv: self._on_advert(host, adv))

    async def _run(self, host: blehost.BleHost) -> None:
        while True:
            done, _ = await asyncio.wait({host.lost}, timeout=self.interval)
            for ev in self.table.expire(self._mono()):
                self._emit(ev)
            if not done:
                continue
            log.warning("BLE discovery: adapter %s lost; reopening", self.adapter)
            while True:
                await asyncio.sleep(1.0)
                try:
                    host = await blehost.acquire(self.adapter)
                    await self._setup(host)
                    break
                except (blehost.BleUnavailable, *_ERRORS) as exc:
                    log.info("BLE discovery: cannot reopen %s yet: %s", self.adapter, exc)

    # ---- scanning --------------------------------------------------------------------------------
    def _on_advert(self, host: blehost.BleHost, adv: Advertisement) -> None:
        try:
            ours = parse_advert(adv.data_bytes)
        except BleAdvertError as exc:
            self.refused += 1
            log.debug("advertisement from %s refused: %s", adv.address, exc)
            return
        if ours is None or not dialler(self.keys.node_id.raw, ours.prefix):
            return
        address = str(adv.address).split("/")[0]
        now = self._mono()
        known = self._by_prefix.get(ours.prefix)
        if known is not None and self.table.touch(known, now) and not self._wants(known):
            return
        if self._probe is not None and not self._probe.done():
            return
        if now - self._probed.get(address, -1e9) < self.interval:
            return
        self._probed[address] = now
        if len(self._probed) > _MAX_REMEMBERED:  # anyone can advertise from many addresses
            self._probed = {a: t for a, t in self._probed.items() if now - t < self.interval}
        if len(self._by_prefix) > _MAX_REMEMBERED:
            self._by_prefix = {p: n for p, n in self._by_prefix.items() if n in self.table}
        self._probe = asyncio.get_running_loop().create_task(
            self._read_beacon(host, address, ours.psm, ours.prefix))

    async def _read_beacon(self, host: blehost.BleHost, address: str, psm: int,
                           prefix: bytes) -> None:
        try:
            beacon = await asyncio.wait_for(self._fetch(host, address), PROBE_TIMEOUT)
            events = self.table.receive(beacon, self._clock(), address, self._mono())
        except _ERRORS as exc:
            self.refused += 1
            log.debug("BLE neighbour at %s: %s", address, exc or type(exc).__name__)
            return
        url = f"ble://{self.adapter}/{address}?psm={psm}"
        for ev in events:
            if isinstance(ev, NeighbourFound | NeighbourChanged):
                if ev.node_id.raw[:PREFIX_LEN] != prefix:
                    self.refused += 1  # a beacon that is not the advertiser's own
                    log.debug("BLE neighbour at %s: beacon of another node", address)
                    continue
                self._by_prefix[prefix] = ev.node_id
                ev = dataclasses.replace(ev, urls=(url,))
            self._emit(ev)
        node = self._by_prefix.get(prefix)
        if not events and node is not None and self._wants(node):
            # Known, heard again, not linked (the link dropped): found again, so the mesh dials.
            self._emit(NeighbourFound(node, (url,), "", address))

    async def _fetch(self, host: blehost.BleHost, address: str) -> bytes:
        connection = await host.connect(address, timeout=PROBE_TIMEOUT / 2)
        try:
            peer = Peer(connection)
            with contextlib.suppress(*_ERRORS):
                await peer.request_mtu(517)  # the beacon in one read where the peer allows
            await peer.discover_services([UUID(SERVICE_UUID)])
            chars = await peer.discover_characteristics(uuids=[BEACON_CHAR_UUID])
            if not chars:
                raise WireError("no beacon characteristic")
            return bytes(await chars[0].read_value())
        finally:
            with contextlib.suppress(*_ERRORS):
                await asyncio.wait_for(connection.disconnect(), 2.0)

    def _emit(self, ev: NeighbourEvent) -> None:
        try:
            self._on_event(ev)
        except Exception:  # supervision boundary: a bad callback must not stop discovery
            log.exception("BLE discovery event handler failed")
