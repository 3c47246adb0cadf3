"""``store.sqlite``: the one opener of every SQLite database. Only it imports sqlite3; it sets
WAL and each store's own durability; migrations run in order, one transaction each; a database
newer than the code is refused in one line."""
from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

from eschaton.chain.embedded.index import ChainIndex
from eschaton.channel.store import ChannelStore
from eschaton.daemon.microgrid import _Intents
from eschaton.errors import LocalError
from eschaton.microgrid.ledger import SqliteLedger
from eschaton.store.sqlite import (
    Connection,
    Migration,
    SchemaTooNew,
    open_db,
    run_script,
    schema_version,
)

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "firmware" / "eschaton" / "store"


def _imports_sqlite3(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlite3" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlite3" and not node.level:
            return True
    return False


def test_only_the_store_imports_sqlite3() -> None:
    files = [p for top in ("firmware", "hw", "meter_drivers") for p in (ROOT / top).rglob("*.py")]
    assert len(files) > 100  # the walk sees the tree, or it proves nothing
    assert _imports_sqlite3(STORE / "sqlite.py")  # ... and the check sees an import
    offenders = [str(p.relative_to(ROOT)) for p in files if STORE not in p.parents and _imports_sqlite3(p)]
    assert offenders == [], f"open SQLite through eschaton.store.sqlite: {offenders}"


def _step(sql: str) -> Migration:
    def run(db: Connection) -> None:
        db.execute(sql)
    return run


def test_migrations_run_in_order_and_a_failed_step_leaves_the_version_before(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = [_step("CREATE TABLE a (x)"), _step("INSERT INTO a VALUES (1)")]
    open_db(path, first, synchronous="FULL").close()

    def half_then_fail(db: Connection) -> None:
        db.execute("INSERT INTO a VALUES (2)")
        raise RuntimeError("step 3 broke")

    with pytest.raises(RuntimeError):
        open_db(path, [*first, half_then_fail], synchronous="FULL")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT x FROM a").fetchall() == [(1,)]  # the failed step left nothing
    db.close()
    again = open_db(path, [*first, _step("INSERT INTO a VALUES (3)")], synchronous="FULL")
    assert schema_version(again) == 3
    assert again.execute("SELECT x FROM a").fetchall() == [(1,), (3,)]
    again.close()


def test_a_newer_database_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(SchemaTooNew) as e:
        open_db(path, [_step("CREATE TABLE t (x)")], synchronous="FULL")
    assert isinstance(e.value, LocalError)
    assert str(e.value) == f"{path}: schema 7 is newer than this firmware's (1); refusing to open it"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 7  # untouched


def test_run_script_keeps_a_trigger_whole_inside_the_transaction(tmp_path: Path) -> None:
    sql = """CREATE TABLE t (x);
    CREATE TRIGGER t_no_update BEFORE UPDATE ON t BEGIN SELECT RAISE(ABORT, 'no; never'); END;
    INSERT INTO t VALUES (1)"""
    db = open_db(tmp_path / "s.db", [lambda db: run_script(db, sql)], synchronous="FULL")
    with pytest.raises(sqlite3.IntegrityError, match="no; never"):
        db.execute("UPDATE t SET x = 2")
    assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    db.close()


def _sync(db: Connection) -> int:
    return int(db.execute("PRAGMA synchronous").fetchone()[0])


FULL, NORMAL = 2, 1


def test_each_store_keeps_its_durability(tmp_path: Path) -> None:
    """Money and decisions acted on fsync every commit (FULL); the chain index does not (NORMAL,
    its checkpoints fsync on their own thread) and keeps its cache settings."""
    st = ChannelStore(tmp_path / "channels.db")
    led = SqliteLedger(tmp_path / "ledger.db")
    it = _Intents(tmp_path / "intents.db")
    idx = ChainIndex(tmp_path / "index.sqlite")
    try:
        for db in (st.db, led._db, it.db, idx.db):
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [_sync(db) for db in (st.db, led._db, it.db)] == [FULL] * 3
        assert _sync(idx.db) == NORMAL and _sync(idx.checkpointer._db) == NORMAL
        assert idx.db.execute("PRAGMA cache_size").fetchone()[0] == -32768
        assert idx.db.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
        assert idx.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # the checkpointer's
    finally:
        st.close()
        led.close()
        it.close()
        idx.close()
    bench = ChannelStore(tmp_path / "bench.db", fsync=False)
    assert _sync(bench.db) == 0  # OFF: benchmarks only
    bench.close()
