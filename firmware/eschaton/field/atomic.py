"""Crash-safe file writes for the boot steps: a power cut at any moment leaves either the old
file or the new one, never a torn one (write a temporary file, fsync it, rename it over, fsync
the directory)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, *, uid: int = -1,
                 gid: int = -1, dir_mode: int = 0o755) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly that (and has ``mode``);
    returns whether the file changed. Missing directories are made with ``dir_mode``."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    try:
        st = path.stat()
        if (st.st_mode & 0o7777) == mode and path.read_bytes() == raw \
                and (uid == -1 or st.st_uid == uid) and (gid == -1 or st.st_gid == gid):
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a power cut during an earlier write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return True


def remove(path: Path) -> bool:
    """Remove ``path`` if it exists (durably); returns whether it did."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True
