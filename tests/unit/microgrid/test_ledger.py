"""The hash-chained SQLite ledger: append-only, and any edit in the middle is detected."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.microgrid.canonical import Plain, decode, encode
from eschaton.core.microgrid.errors import CodecError, LedgerCorrupt
from eschaton.core.microgrid.ledger import Entry, EntryKind, link_hash
from eschaton.microgrid.ledger import SqliteLedger
from eschaton.microgrid.service import BuyerService
from tests.unit.microgrid.helpers import BUYER_KEY


def _fill(path: Path, n: int = 6) -> bytes:
    with SqliteLedger(path) as ledger:
        for i in range(n):
            ledger.append([Entry(EntryKind.PAYMENT_RECEIVED, 1000 + i,
                                 {"meter_id": "m", "amount_sat": i, "payment_id": bytes([i])})])
        return ledger.head()[1]


def _raw(path: Path, *sql: str) -> None:
    """Edit the file behind the ledger's back, as someone with the SD card would."""
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER entries_no_update")
    db.execute("DROP TRIGGER entries_no_delete")
    for s in sql:
        db.execute(s)
    db.commit()
    db.close()


def test_verify_returns_entries_in_order(tmp_path: Path) -> None:
    _fill(tmp_path / "l.db")
    with SqliteLedger(tmp_path / "l.db") as ledger:
        entries = ledger.verify()
    assert [e.body["amount_sat"] for e in entries] == list(range(6))
    assert all(e.kind is EntryKind.PAYMENT_RECEIVED for e in entries)


def test_ordinary_updates_and_deletes_are_refused(tmp_path: Path) -> None:
    _fill(tmp_path / "l.db")
    db = sqlite3.connect(tmp_path / "l.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE entries SET at_ms = 0 WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM entries WHERE seq = 6")
    db.close()


def _payload_edit(path: Path) -> None:
    with SqliteLedger(path) as ledger:
        row = [r for r in ledger.rows() if r.seq == 3][0]
    forged = row.payload.replace(b"amount_sati2e", b"amount_sati9e")
    assert forged != row.payload
    _raw(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET payload = ? WHERE seq = 3", (forged,))
    db.commit()
    db.close()


def _rehash_one(path: Path) -> None:
    """Change entry 3 and fix its own hash: the next entry's link still breaks."""
    with SqliteLedger(path) as ledger:
        rows = {r.seq: r for r in ledger.rows()}
    forged = rows[3].payload.replace(b"amount_sati2e", b"amount_sati9e")
    _raw(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET payload = ?, hash = ? WHERE seq = 3",
               (forged, link_hash(rows[2].hash, forged)))
    db.commit()
    db.close()


TAMPERS: dict[str, tuple[Callable[[Path], None], int]] = {
    "payload edited": (_payload_edit, 3),
    "entry rehashed": (_rehash_one, 4),
    "middle deleted": (lambda p: _raw(p, "DELETE FROM entries WHERE seq = 3"), 4),
    "kind column changed": (lambda p: _raw(p, "UPDATE entries SET kind = 'supply_cut' "
                                              "WHERE seq = 2"), 2),
    "entries swapped": (lambda p: _raw(p, "UPDATE entries SET seq = 100 WHERE seq = 2",
                                       "UPDATE entries SET seq = 2 WHERE seq = 3",
                                       "UPDATE entries SET seq = 3 WHERE seq = 100"), 2),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampering_is_detected(tmp_path: Path, name: str) -> None:
    tamper, bad_seq = TAMPERS[name]
    _fill(tmp_path / "l.db")
    tamper(tmp_path / "l.db")
    with SqliteLedger(tmp_path / "l.db") as ledger, pytest.raises(LedgerCorrupt) as exc:
        ledger.verify()
    assert exc.value.seq == bad_seq


def test_truncated_tail_needs_the_expected_head(tmp_path: Path) -> None:
    head = _fill(tmp_path / "l.db")
    _raw(tmp_path / "l.db", "DELETE FROM entries WHERE seq >= 5")
    with SqliteLedger(tmp_path / "l.db") as ledger:
        assert len(ledger.verify()) == 4  # a shorter chain is still a valid chain...
        with pytest.raises(LedgerCorrupt):
            ledger.verify(expected_head=head)  # ...unless we know where it ended


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    from eschaton.microgrid.ledger import LedgerIOError

    _fill(tmp_path / "l.db", 1)
    db = sqlite3.connect(tmp_path / "l.db")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(LedgerIOError, match="schema 99"):
        SqliteLedger(tmp_path / "l.db")


def test_a_service_refuses_to_start_on_a_tampered_ledger(tmp_path: Path) -> None:
    _fill(tmp_path / "l.db")
    _payload_edit(tmp_path / "l.db")
    with pytest.raises(LedgerCorrupt):
        BuyerService.open(tmp_path / "l.db", BUYER_KEY)


def _checkpoint(ledger: SqliteLedger, at_ms: int = 2000) -> int:
    seq, _ = ledger.append([Entry(EntryKind.CHECKPOINT, at_ms, {"state": {"contracts": {}}})])
    return seq


def test_archiving_moves_the_entries_before_a_checkpoint_and_keeps_one_chain(tmp_path: Path) -> None:
    head = _fill(tmp_path / "l.db")
    with SqliteLedger(tmp_path / "l.db") as ledger:
        cp = _checkpoint(ledger)
        ledger.append([Entry(EntryKind.PAYMENT_RECEIVED, 3000, {"meter_id": "m", "amount_sat": 9,
                                                                "payment_id": b"x"})])
        head = ledger.head()[1]
        assert ledger.archive_before(cp) == 6
        assert ledger.first_seq() == cp == 7
        kinds = [e.kind for e in ledger.verify(expected_head=head)]
        assert kinds == [EntryKind.CHECKPOINT, EntryKind.PAYMENT_RECEIVED]
        assert ledger.verify_archive() == 6
        assert ledger.archive_path.exists()
        # Ordinary deletes are still refused after archiving re-created the trigger.
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger._db.execute("DELETE FROM entries WHERE seq = 8")
        assert ledger.append([Entry(EntryKind.PAYMENT_RECEIVED, 4000, {"n": 1})])[0] == 9


def test_archiving_needs_a_checkpoint_and_survives_a_crash_halfway(tmp_path: Path) -> None:
    from eschaton.microgrid.ledger import LedgerIOError

    _fill(tmp_path / "l.db")
    with SqliteLedger(tmp_path / "l.db") as ledger:
        with pytest.raises(LedgerIOError, match="not a checkpoint"):
            ledger.archive_before(4)
        cp = _checkpoint(ledger)
        # A crash after the copy to the archive, before the delete here: rows are in both.
        with SqliteLedger(ledger.archive_path) as archive:
            archive._copy_from((r.seq, r.prev_hash, r.hash, "payment_received", 0, r.payload)
                               for r in ledger.rows() if r.seq < cp)
        assert len(ledger.verify()) == 7  # still the whole chain here
        assert ledger.archive_before(cp) == 6  # the next call finishes the job
        assert ledger.verify_archive() == 6


def test_a_ledger_that_starts_late_must_start_with_a_checkpoint(tmp_path: Path) -> None:
    _fill(tmp_path / "l.db")
    _raw(tmp_path / "l.db", "DELETE FROM entries WHERE seq <= 2")  # someone cut the history
    with SqliteLedger(tmp_path / "l.db") as ledger, pytest.raises(LedgerCorrupt, match="missing"):
        ledger.verify()


def test_a_tampered_archive_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path / "l.db")
    with SqliteLedger(tmp_path / "l.db") as ledger:
        ledger.archive_before(_checkpoint(ledger))
        _payload_edit(ledger.archive_path)
        with pytest.raises(LedgerCorrupt):
            ledger.verify_archive()


plain: st.SearchStrategy[Plain] = st.recursive(
    st.integers(-(10**30), 10**30) | st.binary(max_size=20) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(value=plain)
def test_codec_round_trips(value: Plain) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize("data", [b"i01e", b"i-0e", b"ie", b"s1:", b"b2:a", b"d s1:ai1ee",
                                  b"ds1:bi1es1:ai1ee", b"di1ei1ee", b"i1ei2e", b"x", b"l",
                                  b"s1:\xff", b"ds1:ai1es1:ai1ee"])
def test_codec_refuses_non_canonical(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


@pytest.mark.parametrize("value", [True, 1.5, None, {1: 2}, (1, 2)])
def test_codec_refuses_non_plain_values(value: object) -> None:
    with pytest.raises(CodecError):
        encode(value)  # type: ignore[arg-type]
