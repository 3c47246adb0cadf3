"""Who may use the dashboard: the password hash, sessions and the login rate limit.

Rules / theory of operation:
- The per-node password is stored as an scrypt hash (``scrypt$N$r$p$salt$hash``, hex) in a 0600
  file; the password itself is never stored. The API token (already a 0600 secret of the node's
  user) logs in too, so a node without a password set is still reachable by its operator.
- A session is 32 random bytes in an ``HttpOnly; SameSite=Strict`` cookie, with its own CSRF
  token that every POST must carry; sessions live in memory (a restart logs everyone out) and
  expire after ``SESSION_S`` of inactivity. At most ``MAX_SESSIONS``: the oldest goes first.
- Login failures are counted per client address: ``FREE_FAILURES`` are free, then each further
  failure locks the address out for twice as long as the one before (``BACKOFF_S``, up to
  ``MAX_LOCK_S``); while locked, even the right password is refused. A success clears the count.
- Time is an input (``now``): nothing here sleeps or reads a clock.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1  # 16 MiB, ~50 ms on a Pi 4: fine for a login
MIN_PASSWORD = 8
SESSION_S = 12 * 3600.0
MAX_SESSIONS = 64
FREE_FAILURES = 3
BACKOFF_S = 2.0
MAX_LOCK_S = 300.0
MAX_ADDRESSES = 4096  # addresses whose failures are remembered (oldest forgotten first)


class PasswordError(ValueError):
    pass


def hash_password(password: str, salt: bytes | None = None) -> str:
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"the password must have at least {MIN_PASSWORD} characters")
    salt = salt if salt is not None else secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${h.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; a malformed ``stored`` matches nothing."""
    try:
        kind, n, r, p, salt, want = stored.strip().split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(want)), maxmem=1 << 26)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(want))


def write_password_file(path: Path, password: str) -> None:
    """Store the hash of ``password`` at ``path`` (0600, replaced atomically)."""
    line = hash_password(password) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_password_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


@dataclass
class Session:
    id: str
    csrf: str
    who: str  # "password" or "token": how it logged in (shown on the page, logged)
    seen: float
    flash: str = ""  # the outcome of the last action, shown once on the next page


@dataclass
class Sessions:
    ttl: float = SESSION_S
    limit: int = MAX_SESSIONS
    _by_id: OrderedDict[str, Session] = field(default_factory=OrderedDict)

    def new(self, who: str, now: float) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), who, now)
        self._by_id[s.id] = s
        while len(self._by_id) > self.limit:
            self._by_id.popitem(last=False)
        return s

    def get(self, sid: str | None, now: float) -> Session | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        if now - s.seen > self.ttl:
            del self._by_id[sid]
            return None
        s.seen = now
        self._by_id.move_to_end(sid)
        return s

    def drop(self, sid: str) -> None:
        self._by_id.pop(sid, None)

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


@dataclass
class LoginLimiter:
    free: int = FREE_FAILURES
    backoff_s: float = BACKOFF_S
    max_lock_s: float = MAX_LOCK_S
    _by_addr: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)

    def wait(self, addr: str, now: float) -> float:
        """Seconds ``addr`` must still wait before it may try again (0: it may try now)."""
        f = self._by_addr.get(addr)
        return max(0.0, f.locked_until - now) if f is not None else 0.0

    def failed(self, addr: str, now: float) -> float:
        """Count a failure; returns the lock it earned (0 while failures are still free)."""
        f = self._by_addr.setdefault(addr, _Failures())
        self._by_addr.move_to_end(addr)
        while len(self._by_addr) > MAX_ADDRESSES:
            self._by_addr.popitem(last=False)
        f.count += 1
        over = f.count - self.free
        if over <= 0:
            return 0.0
        lock = min(self.backoff_s * 2.0 ** (over - 1), self.max_lock_s)
        f.locked_until = now + lock
        return lock

    def succeeded(self, addr: str) -> None:
        self._by_addr.pop(addr, None)
