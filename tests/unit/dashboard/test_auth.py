"""The dashboard's password hash, sessions and login backoff (pure: time is an input)."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from eschaton.dashboard.auth import (
    LoginLimiter,
    PasswordError,
    Sessions,
    hash_password,
    read_password_file,
    verify_password,
    write_password_file,
)


def test_the_password_is_stored_as_a_salted_scrypt_hash_that_only_it_matches(tmp_path: Path) -> None:
    p = tmp_path / "d" / "dashboard.passwd"
    write_password_file(p, "correct horse")
    stored = read_password_file(p)
    assert stored is not None and stored.startswith("scrypt$") and "correct horse" not in p.read_text()
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored) and not verify_password("", stored)
    assert hash_password("correct horse") != hash_password("correct horse")  # salted
    for broken in ("", "scrypt$1$2", "md5$1$1$1$00$00", "scrypt$16384$8$1$zz$00"):
        assert not verify_password("correct horse", broken)
    with pytest.raises(PasswordError):
        hash_password("short")


def test_wrong_passwords_are_free_three_times_then_locked_for_twice_as_long_each_time() -> None:
    lim = LoginLimiter(free=3, backoff_s=2.0, max_lock_s=10.0)
    assert [lim.failed("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.wait("a", 0.0) == 0.0
    assert lim.failed("a", 0.0) == 2.0
    assert lim.wait("a", 1.0) == 1.0 and lim.wait("b", 1.0) == 0.0  # per address
    assert lim.failed("a", 2.0) == 4.0 and lim.failed("a", 6.0) == 8.0
    assert lim.failed("a", 14.0) == 10.0  # capped
    assert lim.wait("a", 30.0) == 0.0
    lim.succeeded("a")
    assert lim.failed("a", 30.0) == 0.0  # a success clears the count


def test_sessions_expire_when_idle_and_the_oldest_goes_when_full() -> None:
    s = Sessions(ttl=100.0, limit=2)
    a = s.new("password", 0.0)
    assert s.get(a.id, 50.0) is a and a.csrf and a.csrf != a.id
    assert s.get(a.id, 149.0) is a  # seen at 50: still alive
    assert s.get(a.id, 250.0) is None and s.get(a.id, 250.0) is None
    b, c, d = s.new("token", 300.0), s.new("token", 301.0), s.new("token", 302.0)
    assert s.get(b.id, 303.0) is None and s.get(c.id, 303.0) is c and s.get(d.id, 303.0) is d
    s.drop(c.id)
    assert s.get(c.id, 303.0) is None and s.get("", 303.0) is None and s.get(None, 303.0) is None
