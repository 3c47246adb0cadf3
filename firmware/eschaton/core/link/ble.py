"""Bluetooth LE pieces that need no radio (sans-IO): the advertisement we send and recognise,
the address and PSM forms of ``ble://`` URLs, and segmentation to the channel's MTU.

Rules / theory of operation:
- A node advertises one legacy advertising PDU (31 bytes at most, the only size a Pi Zero 2 W's
  Bluetooth 4.2 controller can send): Flags (3 bytes) and Service Data for our own 128-bit
  service UUID (18 bytes) carrying ``version (1) || PSM (1) || node id prefix (8)``: exactly 31.
  The PSM is the LE credit-based channel to dial (dynamic range 0x80..0xFF fits in one byte).
- The advertisement is unsigned and carries only 8 bytes of the 32-byte node id (a full id does
  not fit). A scanner uses the prefix only to skip nodes it is already linked with and to decide
  who dials (the lower id, as with IP beacons); the full id comes from the node's signed beacon,
  read over GATT (``BEACON_CHAR_UUID``), and the Noise handshake authenticates it.
- Anything in an advertisement that is not ours is ``None`` (the air is full of other devices);
  an advertisement with our UUID but a bad body raises ``BleAdvertError``, a ``WireError``.
- A link carries the SAME bytes as ``serial://`` (COBS + CRC-32 frames, ``core/wire/framing``)
  over an L2CAP LE credit-based channel treated as a byte stream; ``segments`` cuts those bytes
  into SDUs no larger than the peer's MTU.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from eschaton.core.url import BadTransportUrl, TransportUrl
from eschaton.core.wire.errors import WireError

# Our own random 128-bit UUIDs (not SIG-assigned: a vendor UUID needs no registration).
SERVICE_UUID = "b35fdcef-6266-4b4e-92a3-34dd4ce210bf"
BEACON_CHAR_UUID = "a223fe77-34f0-4ec1-93b2-3860513aff36"
ADVERT_VERSION = 1
PREFIX_LEN = 8
DEFAULT_PSM = 0xE5
PSM_MIN, PSM_MAX = 0x80, 0xFF
"""LE dynamic PSMs that fit the advertisement's one byte."""
MIN_MTU = 23
"""Smallest SDU size an LE credit-based channel may negotiate (Core spec Vol 3 Part A 4.22)."""
MAX_ADVERT = 31

_AD_FLAGS = 0x01
_AD_UUIDS_128 = 0x07
_AD_SERVICE_DATA_128 = 0x21
_FLAGS_LE_GENERAL_NO_BREDR = 0x06
_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class BleAdvertError(WireError):
    """An advertisement with our service UUID but a body we cannot use."""


class BadBleValue(ValueError):
    """A BLE address or PSM given in a URL or configuration that cannot be used."""


def uuid_le(text: str) -> bytes:
    """A UUID as advertising data carries it: 16 bytes, little-endian."""
    return bytes.fromhex(text.replace("-", ""))[::-1]


_SERVICE_LE = uuid_le(SERVICE_UUID)


@dataclass(frozen=True, slots=True)
class BleAdvert:
    """What a node's advertisement says."""

    prefix: bytes
    """The first ``PREFIX_LEN`` bytes of its node id (unauthenticated)."""
    psm: int


def check_psm(psm: int) -> int:
    if not PSM_MIN <= psm <= PSM_MAX:
        raise BadBleValue(f"PSM {psm} is outside the LE dynamic range {PSM_MIN}..{PSM_MAX}")
    return psm


def parse_psm(text: str) -> int:
    """``229`` or ``0xe5``."""
    try:
        psm = int(text, 0)
    except ValueError:
        raise BadBleValue(f"PSM {text!r} is not a number") from None
    return check_psm(psm)


def check_address(text: str) -> str:
    """A Bluetooth device address ``AA:BB:CC:DD:EE:FF`` (upper-cased)."""
    if not _ADDRESS.match(text):
        raise BadBleValue(f"{text!r} is not a Bluetooth address like AA:BB:CC:DD:EE:FF")
    return text.upper()


def is_address(text: str) -> bool:
    return bool(_ADDRESS.match(text))


def static_address(seed: bytes) -> str:
    """A random static address (top two bits set, not all ones or zeros) derived from 6 bytes."""
    if len(seed) < 6:
        raise BadBleValue("need 6 bytes to derive an address")
    raw = bytearray(seed[:6])
    raw[0] |= 0xC0
    if raw[1:] in (b"\x00" * 5, b"\xff" * 5):
        raw[5] ^= 0x01
    return ":".join(f"{b:02X}" for b in raw)


def encode_advert(node_id: bytes, psm: int) -> bytes:
    """The advertising data of a node: Flags + our Service Data (31 bytes)."""
    check_psm(psm)
    body = bytes([ADVERT_VERSION, psm]) + node_id[:PREFIX_LEN]
    if len(body) != 2 + PREFIX_LEN:
        raise BadBleValue(f"node id of {len(node_id)} bytes is shorter than {PREFIX_LEN}")
    service = _SERVICE_LE + body
    out = bytes([2, _AD_FLAGS, _FLAGS_LE_GENERAL_NO_BREDR, 1 + len(service),
                 _AD_SERVICE_DATA_128]) + service
    assert len(out) <= MAX_ADVERT
    return out


def plain_advert() -> bytes:
    """Advertising data of a listener without discovery: Flags + our service UUID, so that a
    central can connect (a peripheral that does not advertise cannot be dialled) without the
    node announcing who it is."""
    return bytes([2, _AD_FLAGS, _FLAGS_LE_GENERAL_NO_BREDR, 17, _AD_UUIDS_128]) + _SERVICE_LE


def parse_advert(data: bytes) -> BleAdvert | None:
    """Our advertisement in ``data`` (advertising or scan-response data), else ``None``."""
    i = 0
    while i < len(data):
        n = data[i]
        if n == 0:
            break  # zero padding ends the significant part (Core spec Vol 3 Part C 11)
        if i + 1 + n > len(data):
            return None  # a truncated structure: not something we can read, maybe not ours
        kind, value = data[i + 1], data[i + 2:i + 1 + n]
        i += 1 + n
        if kind != _AD_SERVICE_DATA_128 or value[:16] != _SERVICE_LE:
            continue
        body = value[16:]
        if len(body) < 2 + PREFIX_LEN:
            raise BleAdvertError(f"advertisement body of {len(body)} bytes is too short")
        if body[0] != ADVERT_VERSION:
            raise BleAdvertError(f"advertisement version {body[0]} is not {ADVERT_VERSION}")
        try:
            psm = check_psm(body[1])
        except BadBleValue as exc:
            raise BleAdvertError(f"advertisement: {exc}") from None
        return BleAdvert(bytes(body[2:2 + PREFIX_LEN]), psm)
    return None


def segments(data: bytes, mtu: int) -> list[bytes]:
    """``data`` cut into SDUs of at most ``mtu`` bytes, in order (none for empty data)."""
    if mtu < MIN_MTU:
        raise BadBleValue(f"MTU {mtu} is below the minimum {MIN_MTU}")
    return [data[i:i + mtu] for i in range(0, len(data), mtu)]


def dialler(own: bytes, prefix: bytes) -> bool:
    """Whether we dial a neighbour whose advertisement carries ``prefix``: the lower id dials,
    as with IP beacons. Equal prefixes (1 in 2**64) cannot be ordered here: both dial, and the
    mesh keeps one of the two links."""
    mine = own[:PREFIX_LEN]
    return mine <= prefix and mine != b""


@dataclass(frozen=True, slots=True)
class BleUrl:
    """``ble://ADAPTER[/ADDRESS][?psm=N&address=A]``, checked."""

    adapter: str
    """bumble HCI transport spec: ``hci-socket:0`` on a Pi, ``tcp-client:HOST:PORT`` in tests."""
    peer: str | None
    """The node to dial (None in a listen URL)."""
    psm: int
    own: str | None
    """Our random static address (None: derived from the adapter's public address)."""


def parse_ble_url(url: TransportUrl, *, dial: bool | None = None) -> BleUrl:
    """Check a ``ble://`` URL; ``dial``: True needs a peer address, False refuses one."""
    adapter = url.netloc
    if not adapter or is_address(adapter):
        raise BadTransportUrl(f"{url.url}: needs an adapter, e.g. ble://hci-socket:0 or "
                              "ble://hci-socket:0/F1:22:33:44:55:66")
    unknown = set(url.query) - {"psm", "address"}
    if unknown:
        raise BadTransportUrl(f"{url.url}: unknown option(s) {sorted(unknown)} (psm, address)")
    try:
        peer = check_address(url.path.strip("/")) if url.path.strip("/") else None
        psm = parse_psm(url.query["psm"]) if "psm" in url.query else DEFAULT_PSM
        own = check_address(url.query["address"]) if "address" in url.query else None
    except BadBleValue as exc:
        raise BadTransportUrl(f"{url.url}: {exc}") from None
    if dial is True and peer is None:
        raise BadTransportUrl(f"{url.url}: a peer URL needs the peer's address, "
                              "e.g. ble://hci-socket:0/F1:22:33:44:55:66")
    if dial is False and peer is not None:
        raise BadTransportUrl(f"{url.url}: a listen URL names no peer address")
    return BleUrl(adapter, peer, psm, own)
