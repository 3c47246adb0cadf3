"""Private files and directories: 0600 and 0700, whatever the umask, and tightened when found
looser (datadirs made by older firmware, or by a library that honours the umask).

Rules:
- ``PRIVATE_UMASK`` (0o077) is set by the entry point (``eschaton.cli.main``) so that files made
  by code we do not control (libbitcoinkernel's block files and chainstate, SQLite's ``-wal`` and
  ``-shm``) are born private. systemd's ``UMask=0077`` does the same for the service; a node run
  by hand gets it here.
- Where we create a file or directory ourselves the mode is also explicit, because a library
  caller (a test, a bench) may run with any umask.
- Tightening only removes bits (``mode & 0o700``/``& 0o600``), never adds them, and leaves
  symlinks alone (``chmod`` would follow them out of the datadir).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def set_private_umask() -> int:
    """Make everything this process creates private by default; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def _tighten(path: Path, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    want = mode & (DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE)
    if want != mode:
        os.chmod(path, want)


def make_dirs(path: Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700 (whatever the umask). Directories
    that already exist are not touched: they may be shared (``/var/lib``, ``/tmp``)."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it first; it is theirs to set
        os.chmod(d, DIR_MODE)
    return path


def private_dir(path: Path) -> Path:
    """``make_dirs(path)``, and ``path`` itself tightened to 0700 if it existed looser: for a
    directory that is the node's own (the datadir, the chain directory)."""
    make_dirs(path)
    tighten(path)
    return path


def tighten(path: Path) -> None:
    """Drop group/other bits of one file or directory, if it exists (symlinks are skipped)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISLNK(st.st_mode):
        _tighten(path, st)


def tighten_tree(root: Path) -> None:
    """``tighten`` ``root`` and everything below it (directories 0700, files 0600)."""
    tighten(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            tighten(Path(dirpath) / name)


def touch_private(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if missing; tighten it if it exists."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, FILE_MODE)  # fchmod needs no write access
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & ~FILE_MODE:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (readers never see half a file), mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the open() mode is filtered by the umask; this is not
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
