"""Sales paid through the network: the request tag, the buyer's check of a seller's request, the
cap, the dust floor, the seller's bound on asks; the config that turns it on; the store marks."""
from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eschaton.config import ConfigError, parse_config
from eschaton.core.link.identity import NodeKeys
from eschaton.core.microgrid.decisions import Pay
from eschaton.core.microgrid.routed import (
    MIN_PAYMENT_SAT,
    RequestRefused,
    Tag,
    askable,
    check_request,
    payable,
    routing_id,
    within_cap,
    worth_handling,
)
from eschaton.core.routing.invoice import PaymentRequest
from eschaton.microgrid.received import Received

SELLER = NodeKeys.generate(random.Random(1).randbytes)
OTHER = NodeKeys.generate(random.Random(2).randbytes)
PAY = Pay("client", b"\x01" * 32, b"\x02" * 32, 700)
NOW = 1_800_000_000


def _req(keys: NodeKeys = SELLER, amount: int = 700, description: str | None = None,
         created: int = NOW) -> PaymentRequest:
    return PaymentRequest.create(keys, payment_hash=hashlib.sha256(b"x").digest(), amount=amount,
                                 created=created, expiry=600, secret=b"\x03" * 32, final_delta=18,
                                 description=Tag.of(PAY).text() if description is None else description)


def test_the_tag_round_trips_and_fits_a_request() -> None:
    tag = Tag("uplink:east 1", b"\xaa" * 32, b"\xbb" * 32)  # the meter is free text, colons too
    assert Tag.parse(tag.text()) == tag
    long = Tag("m" * 64, b"\xaa" * 32, b"\xbb" * 32)
    assert len(long.text().encode()) <= 256  # a request's description limit
    assert Tag.parse(_req(description=long.text()).description) == long


@pytest.mark.parametrize("text", [
    "", "five hops", "eschaton-mg1:", "eschaton-mg0:" + "aa" * 32 + ":" + "bb" * 32 + ":m",
    "eschaton-mg1:" + "aa" * 31 + ":" + "bb" * 32 + ":m", "eschaton-mg1:" + "zz" * 32 + ":" + "bb" * 32 + ":m",
    "eschaton-mg1:" + "aa" * 32 + ":" + "bb" * 32 + ":",
])
def test_a_description_that_is_not_a_tag_names_nothing(text: str) -> None:
    assert Tag.parse(text) is None


@given(st.text(max_size=300))
def test_tag_parsing_never_raises(text: str) -> None:
    t = Tag.parse(text)
    assert t is None or Tag.parse(t.text()) == t


def test_the_buyer_pays_only_the_sellers_request_for_that_very_payment() -> None:
    check_request(_req(), seller=SELLER.node_id.raw, pay=PAY, now_s=NOW + 10)
    cases = [
        (_req(keys=OTHER), "payee"),  # someone else's request
        (_req(amount=701), "asks 701"),  # more (or less) than the payment
        (_req(description=Tag("client", b"\x09" * 32, PAY.ref).text()), "description"),  # another payment
        (_req(description=Tag("other", PAY.payment_id, PAY.ref).text()), "description"),  # another meter
        (_req(description="pay me"), "description"),
        (_req(created=NOW - 700), "expired"),
    ]
    for req, why in cases:
        with pytest.raises(RequestRefused, match=why) as e:
            check_request(req, seller=SELLER.node_id.raw, pay=PAY, now_s=NOW + 10)
        assert e.value.reason == "request_mismatch"


def test_the_routing_id_is_derived_short_and_distinct() -> None:
    # payment ids are sha256 outputs: their first 24 bytes are as unique as the whole
    a, b = routing_id(b"\x01" * 32), routing_id(b"\x02" + b"\x01" * 31)
    assert a == routing_id(b"\x01" * 32) and a != b
    assert len(a) <= 56  # the routing service's limit (its attempts add ".n")


def test_cap_dust_floor_and_the_sellers_bound() -> None:
    assert within_cap(0, 1000, None) and within_cap(400, 600, 1000) and not within_cap(401, 600, 1000)
    assert not payable(MIN_PAYMENT_SAT - 1) and payable(MIN_PAYMENT_SAT)
    assert askable(1000, 300, 700) and not askable(1000, 300, 701) and not askable(1000, 1000, 0)
    assert worth_handling({"cum_due_sat": 300 + MIN_PAYMENT_SAT}, 300)
    assert not worth_handling({"cum_due_sat": 299 + MIN_PAYMENT_SAT}, 300)
    assert worth_handling({"cum_due_sat": "lots"}, 300) and worth_handling({}, 300)  # the core refuses those


HEAD = '[node]\ndatadir = "/tmp/x"\n[[bandwidth]]\nname = "client"\naddresses = ["10.0.0.2"]\n'
SELL = ('[microgrid]\n[[microgrid.sell]]\nmeter = "client"\nbuyer = "' + "ab" * 32 + '"\nservice = "bandwidth"\n'
        'unit = "MB"\nbase_unit = "B"\nprice_msat = 1000\n')


def test_config_via_routing_and_its_checks() -> None:
    cfg = parse_config(HEAD + SELL + 'credit_limit_sat = 600\nvia = "routing"\n', "node.toml")
    assert cfg.microgrid is not None and cfg.microgrid.sell[0].via == "routing"
    assert parse_config(HEAD + SELL, "node.toml").microgrid.sell[0].via == "channel"  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as e:  # no escrow carries less than the dust limit
        parse_config(HEAD + SELL + 'credit_limit_sat = 100\nvia = "routing"\n', "node.toml")
    assert e.value.key == "microgrid.sell[0].credit_limit_sat" and "546" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(HEAD + SELL + 'via = "carrier pigeon"\n', "node.toml")
    assert e.value.key == "microgrid.sell[0].via" and e.value.line is not None
    buy = '[node]\ndatadir = "/tmp/x"\n[microgrid]\n[[microgrid.buy]]\nseller = "' + "cd" * 32 + '"\nmax_price_msat = 5\n'
    b = parse_config(buy + 'via = "routing"\nmax_total_sat = 5000\n', "node.toml").microgrid.buy[0]  # type: ignore[union-attr]
    assert (b.via, b.max_total_sat) == ("routing", 5000)
    assert parse_config(buy, "node.toml").microgrid.buy[0].max_total_sat is None  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as e:
        parse_config(buy + "max_total_sat = -1\n", "node.toml")
    assert e.value.key == "microgrid.buy[0].max_total_sat"


def test_received_store_marks_credited_requests_and_migrates_from_v1(tmp_path: Path) -> None:
    path = tmp_path / "microgrid-received.db"
    db = sqlite3.connect(path)  # the file as schema 1 left it, with a channel counted
    db.execute("CREATE TABLE received (channel_id BLOB PRIMARY KEY, peer TEXT NOT NULL, "
               "number INTEGER NOT NULL, balance INTEGER NOT NULL, total INTEGER NOT NULL)")
    db.execute("INSERT INTO received VALUES (?, 'p', 3, 900, 900)", (b"\x07" * 32,))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    r = Received(path)
    assert r.total("p") == 900 and r.position(b"\x07" * 32) == (3, 900)
    assert not r.request_credited(b"h" * 32)
    r.mark_request(b"h" * 32)
    r.mark_request(b"h" * 32)  # idempotent
    r.close()
    r = Received(path)
    assert r.request_credited(b"h" * 32) and not r.request_credited(b"i" * 32)
    r.close()


class _Uplink:
    """The node's bandwidth meters as the microgrid sees them (names, durable totals, the cut
    set): the kernel side is ``tests/integration/hw/test_nft_bandwidth.py``'s."""

    def __init__(self) -> None:
        self.names = ["client"]
        self.bytes = 0
        self.cut_now: set[str] = set()

    def total(self, name: str) -> int:
        return self.bytes

    def cut(self, name: str) -> None:
        self.cut_now.add(name)

    def restore(self, name: str) -> None:
        self.cut_now.discard(name)

    def add_listener(self, fn: object) -> None:
        pass

    def remove_listener(self, fn: object) -> None:
        pass


def test_a_paid_request_is_credited_once_across_replays_and_restarts(tmp_path: Path) -> None:
    """The routing service tells the seller of every paid request again at each start: the seller
    credits each payment id once (also when it credited and crashed before marking the request),
    and a second request for a payment already credited credits nothing."""
    from types import SimpleNamespace

    from nacl.signing import SigningKey

    from eschaton.core.microgrid.buyer import Tolerance
    from eschaton.core.microgrid.decisions import SendInvoice
    from eschaton.core.microgrid.terms import Service, Tariff
    from eschaton.daemon.microgrid import MicrogridService
    from eschaton.microgrid.service import BuyerService

    bkey = SigningKey(b"\x11" * 32)
    cfg = parse_config(HEAD.replace("/tmp/x", str(tmp_path)) + SELL.replace("ab" * 32, bytes(bkey.verify_key).hex())
                       + 'credit_limit_sat = 600\nvia = "routing"\n', "node.toml")
    uplink = _Uplink()
    node = SimpleNamespace(datadir=tmp_path, config=cfg, metering=None, bandwidth=uplink, net=None, channels=None)
    skey = SigningKey(b"\x22" * 32)

    def service() -> MicrogridService:
        assert cfg.microgrid is not None
        return MicrogridService(node, cfg.microgrid, skey, clock=lambda: NOW * 1000)

    svc = service()
    assert svc.seller is not None
    buyer = BuyerService.open(tmp_path / "buyer.db", bkey, Tolerance(0, 0))
    offer = svc.seller.offer(offer_id=b"\x00" * 16, tariff=Tariff(Service.BANDWIDTH, "MB", "B", price_msat=10_000_000,
                             credit_limit_sat=600), meter_id="client", start_units=0, now_ms=NOW * 1000,
                             expires_ms=NOW * 1000 + 60_000, buyer=bytes(bkey.verify_key))
    svc.seller.on_acceptance(buyer.accept(offer.to_wire(), NOW * 1000).to_wire(), NOW * 1000)
    inv = next(d for d in svc.seller.on_reading("client", 90_000, NOW * 1000, NOW * 1000) if isinstance(d, SendInvoice))
    pay = next(p for p in buyer.on_invoice(inv.invoice.to_wire(), NOW * 1000) if isinstance(p, Pay))
    assert pay.amount_sat == 900

    def paid() -> int:
        assert svc.seller is not None
        return svc.seller.core.status("client").paid_sat

    tag = Tag.of(pay).text()
    svc._on_request_paid(b"h1" * 16, pay.amount_sat, tag)
    svc._on_request_paid(b"h1" * 16, pay.amount_sat, tag)  # told again (a replay at start)
    svc._on_request_paid(b"h2" * 16, pay.amount_sat, tag)  # another request for the same payment
    svc._on_request_paid(b"h3" * 16, 5, "five hops")  # a request that is not the microgrid's
    assert paid() == 900
    asyncio_close(svc)
    svc = service()  # a restart: the routing service replays every paid request
    for h in (b"h1" * 16, b"h2" * 16):
        svc._on_request_paid(h, pay.amount_sat, tag)
    assert paid() == 900
    # Credited, then a crash before the request was marked: the replay finds the payment id known.
    inv2 = next(d for d in svc.seller.on_reading("client", 160_000, NOW * 1000 + 1, NOW * 1000 + 1)  # type: ignore[union-attr]
                if isinstance(d, SendInvoice))
    pay2 = next(p for p in buyer.on_invoice(inv2.invoice.to_wire(), NOW * 1000 + 1) if isinstance(p, Pay))
    svc.seller.on_payment(pay2.ref, pay2.payment_id, pay2.amount_sat, NOW * 1000 + 2)  # type: ignore[union-attr]
    asyncio_close(svc)
    svc = service()
    svc._on_request_paid(b"h4" * 16, pay2.amount_sat, Tag.of(pay2).text())
    assert paid() == 900 + 700 and svc.received is not None and svc.received.request_credited(b"h4" * 16)
    asyncio_close(svc)
    buyer.close()


def asyncio_close(svc: object) -> None:
    import asyncio

    asyncio.run(svc.close())  # type: ignore[attr-defined]
