"""The stamp service's parts below the daemon: its ``[stamp]`` section, its store (durable,
private, idempotent), and the round states' transition table."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eschaton.config import ConfigError, parse_config
from eschaton.core.stamp.rounds import IllegalTransition, RoundState, Schedule, transition
from eschaton.daemon.stamp_store import LOCAL, StampStore


def test_stamp_section_defaults_and_errors() -> None:
    cfg = parse_config('[node]\ndatadir = "/tmp/x"\n')
    assert cfg.stamp.round_s == 1.0 and cfg.stamp.upstream == "" and cfg.stamp.price_sat == 0
    cfg = parse_config('[node]\ndatadir = "/tmp/x"\n[stamp]\nround_s = 0.5\nupstream = "' + "ab" * 32 + '"\n')
    assert cfg.stamp.round_s == 0.5 and cfg.stamp.upstream == "ab" * 32
    with pytest.raises(ConfigError, match=r"^n\.toml:4: stamp\.upstream: must be a node id"):
        parse_config('[node]\ndatadir = "/tmp/x"\n[stamp]\nupstream = "peer"\n', "n.toml")
    with pytest.raises(ConfigError, match=r"stamp\.max_digests"):
        parse_config('[node]\ndatadir = "/tmp/x"\n[stamp]\nmax_digests = 0\n')
    cfg = parse_config('[node]\ndatadir = "/tmp/x"\n[stamp]\nprice_sat = 200\nmax_price_sat = 300\n')
    assert cfg.stamp.price_sat == 200 and cfg.stamp.max_price_sat == 300
    with pytest.raises(ConfigError, match=r"^n\.toml:4: stamp\.max_price_sat"):
        parse_config('[node]\ndatadir = "/tmp/x"\n[stamp]\nmax_price_sat = -1\n', "n.toml")
    with pytest.raises(ConfigError, match=r"stamp\.colour"):
        parse_config('[node]\ndatadir = "/tmp/x"\n[stamp]\ncolour = 1\n')


def test_store_accepts_once_privately_and_keeps_rounds(tmp_path: Path) -> None:
    path = tmp_path / "stamp.sqlite"
    s = StampStore(path)
    d = [os.urandom(32) for _ in range(3)]
    ids = s.accept(d, LOCAL)
    assert s.accept(d[:1], LOCAL) == ids[:1]  # a retried request gets the same row
    assert s.accept(d[:1], "ab" * 32) != ids[:1]  # another origin's digest is its own
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert s.count_open() == 4
    rid = s.close_round(ids, b"r" * 32, b"n" * 48, RoundState.COMMITTING, b"tx", "ff" * 32, "")
    s.close()
    s = StampStore(path)  # what a restart reads
    (r,) = s.rounds(tuple(RoundState))
    assert r.id == rid and r.state is RoundState.COMMITTING and r.raw_tx == b"tx"
    assert [x for x, _ in s.round_digests(rid)] == d and s.find(d[2], LOCAL) == (rid, 2)
    s.update(r, RoundState.COMMITTED)
    with pytest.raises(IllegalTransition):
        s.update(r, RoundState.UPSTREAM)
    assert s.round(rid).state is RoundState.COMMITTED
    s.close()


def test_a_payment_is_claimed_once_with_its_batch(tmp_path: Path) -> None:
    """The payee's claim row: a payment buys one batch, durably with its digests; the same batch
    again is answered from the row (nothing added), another batch with it is refused."""
    path, peer = tmp_path / "stamp.sqlite", "ab" * 32
    s = StampStore(path)
    h, d = os.urandom(32), [os.urandom(32) for _ in range(3)]
    assert s.claimed(h) is None
    assert s.accept_paid(h, peer, d, 600, 1.0)
    s.close()
    s = StampStore(path)  # what a restart reads: the claim and the digests, together
    assert s.claimed(h) == b"".join(d) and s.count_open() == 3 and s.find(d[0], peer) == (None, None)
    assert s.accept_paid(h, peer, d, 600, 2.0)  # a retried request: accepted again, nothing new
    assert not s.accept_paid(h, peer, d[:1] + [os.urandom(32)], 600, 3.0)  # a replay for other digests
    assert s.count_open() == 3 and s.earned() == (1, 3, 600)
    s.close()


def test_payer_batches_send_each_digest_once(tmp_path: Path) -> None:
    """The payer's rows: a digest sent to a peer is found again (never sent nor paid twice);
    a batch refused with nothing paid frees its digests, one refused after paying does not."""
    s, peer = StampStore(tmp_path / "stamp.sqlite"), "cd" * 32
    d = [os.urandom(32) for _ in range(4)]
    b1 = s.new_batch(b"1" * 32, peer, d[:2], 5, 1.0)
    assert s.sent(d[0], peer) == (b"1" * 32, None) and s.sent(d[0], "ef" * 32) is None
    b1.detail = "too dear"
    s.refuse_batch(b1)
    assert s.sent(d[0], peer) is None and s.batch(b"1" * 32).state == "refused"  # type: ignore[union-attr]
    b2 = s.new_batch(b"2" * 32, peer, d[2:], 5, 1.0)
    b2.state, b2.amount, b2.preimage = "paid", 1000, b"p" * 32
    s.put_batch(b2)
    b2.detail = "claimed"
    s.refuse_batch(b2)
    assert s.sent(d[2], peer) == (b"2" * 32, None)  # paid: kept, never paid again
    assert s.spent() == (1, 2, 1000) and s.unproven(b"2" * 32) == 2
    s.put_proof(d[2], peer, b"proof")
    assert s.sent(d[2], peer) == (b"2" * 32, b"proof") and s.unproven(b"2" * 32) == 1
    s.close()


def test_transitions_and_schedule() -> None:
    assert transition(RoundState.CONFIRMED, RoundState.COMMITTED) is RoundState.COMMITTED  # reorged out
    with pytest.raises(IllegalTransition):
        transition(RoundState.UPSTREAM, RoundState.COMMITTED)
    sch = Schedule(round_s=2.0, max_digests=3)
    assert not sch.due(None, 0, 100.0) and not sch.due(10.0, 0, 100.0)
    assert not sch.due(10.0, 2, 11.0) and sch.due(10.0, 2, 12.0) and sch.due(10.0, 3, 10.0)


def test_a_data_only_transaction_pays_the_fee_alone() -> None:
    from eschaton.core import coinselect
    from eschaton.errors import LocalError

    sel = coinselect.select([coinselect.Coin("c:0", 10_000, 5)], [34], 0, 2000, 200)
    assert sel.change > 0 and sel.fee + sel.change == 10_000  # the OP_RETURN output carries nothing
    with pytest.raises(LocalError):
        coinselect.select([coinselect.Coin("c:0", 10_000, 5)], [34], -1, 2000, 200)
