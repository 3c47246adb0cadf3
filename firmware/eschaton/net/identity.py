"""The node key on disk: created once on first start, mode 0600, never logged.

The file ``<datadir>/node_key`` holds one line ``eschaton-node-key-v1 <64 hex digits of the
ed25519 seed>``. It is created race-free and umask-independent: written to a temporary file
opened with ``O_CREAT|O_EXCL`` and mode 0600 (then ``fchmod`` 0600, because the open mode is
filtered by the umask), fsynced, and hard-linked into place (``link`` fails if another process
won the race, in which case we load the winner's key). Loading refuses a key file that group or
others can read, as ssh does.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from eschaton.core.link.identity import IdentityError, NodeKeys

KEY_FILE = "node_key"
_HEADER = "eschaton-node-key-v1"


def key_path(datadir: Path) -> Path:
    return Path(datadir) / KEY_FILE


def load_identity(datadir: Path) -> NodeKeys:
    """Load the node key; raises ``IdentityError`` if missing, unreadable, malformed or exposed."""
    path = key_path(datadir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise IdentityError(f"{path}: no node key (run the node once to create it)") from None
    except OSError as exc:
        raise IdentityError(f"{path}: cannot open node key: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise IdentityError(
                f"{path}: node key is accessible by group/others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    parts = data.decode("ascii", "replace").split()
    if len(parts) != 2 or parts[0] != _HEADER:
        raise IdentityError(f"{path}: not an Eschaton node key file")
    try:
        seed = bytes.fromhex(parts[1])
    except ValueError:
        raise IdentityError(f"{path}: node key is not hex") from None
    return NodeKeys.from_seed(seed)


def create_identity(datadir: Path) -> NodeKeys:
    """Generate and store a new node key; raises ``IdentityError`` if one exists."""
    datadir = Path(datadir)
    datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_path(datadir)
    keys = NodeKeys.generate(secrets.token_bytes)
    tmp = datadir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the open() mode is masked by the umask; this is not
        os.write(fd, f"{_HEADER} {keys.seed().hex()}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise IdentityError(f"{path}: a node key already exists") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):
        dfd = os.open(datadir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return keys


def load_or_create_identity(datadir: Path) -> NodeKeys:
    """The node key, creating it on first start."""
    try:
        return load_identity(datadir)
    except IdentityError:
        if key_path(datadir).exists():
            raise
    try:
        return create_identity(datadir)
    except IdentityError:
        return load_identity(datadir)  # another process created it concurrently
