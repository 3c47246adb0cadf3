"""The radio-free BLE pieces: advertisement codec, SDU segmentation, ``ble://`` URL forms."""
from __future__ import annotations

import pytest

from eschaton.core.link.ble import (
    DEFAULT_PSM,
    MAX_ADVERT,
    MIN_MTU,
    PREFIX_LEN,
    SERVICE_UUID,
    BadBleValue,
    BleAdvert,
    BleAdvertError,
    dialler,
    encode_advert,
    parse_advert,
    parse_ble_url,
    plain_advert,
    segments,
    static_address,
    uuid_le,
)
from eschaton.core.url import BadTransportUrl, parse_url

NODE = bytes(range(1, 33))


def test_advert_fits_one_legacy_pdu_and_round_trips() -> None:
    data = encode_advert(NODE, 0xE5)
    assert len(data) == MAX_ADVERT
    assert parse_advert(data) == BleAdvert(NODE[:PREFIX_LEN], 0xE5)
    # Zero padding after the structures (some controllers pad to 31 bytes) changes nothing.
    assert parse_advert(data + b"\x00" * 3) == BleAdvert(NODE[:PREFIX_LEN], 0xE5)
    assert parse_advert(plain_advert()) is None  # a listener without discovery says no more
    assert len(plain_advert()) <= MAX_ADVERT


def test_other_devices_adverts_are_not_ours() -> None:
    assert parse_advert(b"") is None
    assert parse_advert(bytes.fromhex("020106" "0AFF4C001005031C")) is None  # someone's beacon
    other = bytes([19, 0x21]) + uuid_le("00000000-0000-1000-8000-00805f9b34fb") + b"\x01\xe5"
    assert parse_advert(other) is None
    assert parse_advert(b"\x1e\x21" + uuid_le(SERVICE_UUID)) is None  # truncated: not readable
    assert parse_advert(b"\x00" + encode_advert(NODE, 0xE5)) is None  # padding ends the data


@pytest.mark.parametrize("body,words", [
    (b"\x01\xe5" + NODE[:3], "too short"),
    (b"\x02\xe5" + NODE[:8], "version 2"),
    (b"\x01\x10" + NODE[:8], "LE dynamic range"),
])
def test_our_uuid_with_a_bad_body_is_an_error(body: bytes, words: str) -> None:
    value = uuid_le(SERVICE_UUID) + body
    with pytest.raises(BleAdvertError, match=words):
        parse_advert(bytes([1 + len(value), 0x21]) + value)


def test_segments_respect_the_mtu() -> None:
    assert segments(b"", 23) == []
    assert segments(b"x" * 23, 23) == [b"x" * 23]
    assert segments(b"x" * 24, 23) == [b"x" * 23, b"x"]
    data = bytes(range(256)) * 300
    for mtu in (MIN_MTU, 100, 512, 65535):
        parts = segments(data, mtu)
        assert b"".join(parts) == data and all(0 < len(p) <= mtu for p in parts)
    with pytest.raises(BadBleValue, match="below the minimum"):
        segments(b"x", 22)


def test_addresses_and_who_dials() -> None:
    a = static_address(b"\x01\x02\x03\x04\x05\x06")
    assert a == "C1:02:03:04:05:06" and int(a[:2], 16) >> 6 == 3
    assert static_address(b"\x00" * 6) != "C0:00:00:00:00:00"  # all-zero random part is invalid
    assert dialler(b"\x01" * 32, b"\x02" * 8) and not dialler(b"\x02" * 32, b"\x01" * 8)
    assert dialler(b"\x01" * 32, b"\x01" * 8)  # equal prefixes: both dial, the mesh keeps one


def test_url_forms() -> None:
    u = parse_ble_url(parse_url("ble://hci-socket:0"), dial=False)
    assert (u.adapter, u.peer, u.psm, u.own) == ("hci-socket:0", None, DEFAULT_PSM, None)
    u = parse_ble_url(parse_url("ble://tcp-client:127.0.0.1:9000/c1:00:00:00:00:02?psm=0x80"),
                      dial=True)
    assert (u.adapter, u.peer, u.psm) == ("tcp-client:127.0.0.1:9000", "C1:00:00:00:00:02", 0x80)
    u = parse_ble_url(parse_url("ble://hci-socket:0?address=C1:00:00:00:00:03"), dial=False)
    assert u.own == "C1:00:00:00:00:03"


@pytest.mark.parametrize("url,dial,words", [
    ("ble://AA:BB:CC:DD:EE:FF", None, "needs an adapter"),
    ("ble://", None, "needs an adapter"),
    ("ble://hci-socket:0", True, "needs the peer's address"),
    ("ble://hci-socket:0/C1:00:00:00:00:02", False, "names no peer"),
    ("ble://hci-socket:0/C1:00:00:00:00", True, "not a Bluetooth address"),
    ("ble://hci-socket:0?psm=x", False, "not a number"),
    ("ble://hci-socket:0?psm=256", False, "LE dynamic range"),
    ("ble://hci-socket:0?mtu=5", False, "unknown option"),
    ("ble://hci-socket:0?address=nope", False, "not a Bluetooth address"),
])
def test_bad_urls_are_one_line_errors(url: str, dial: bool | None, words: str) -> None:
    with pytest.raises(BadTransportUrl, match=words) as exc:
        parse_ble_url(parse_url(url), dial=dial)
    assert "\n" not in str(exc.value) and url in str(exc.value)


def test_the_bluetooth_stack_loads_only_when_used() -> None:
    """bumble costs ~13 MB of RSS: a node without ble:// (most houses) must not import it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    code = ("import sys; import eschaton.net.transport, eschaton.net.mesh, eschaton.config; "
            "assert not [m for m in sys.modules if m.startswith('bumble')], 'bumble loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                   env={"PYTHONPATH": f"{root / 'firmware'}:{root}"})
