"""Apply ``eschaton.toml`` at boot: check it, write what it sets, and keep the last good
configuration when it is bad.

A good file is rendered (``render``) and then saved as the last good one. A bad file changes
nothing the node runs with: the last good file is rendered again (or, before any good one, the
image's defaults: an empty ``eschaton.toml``), and the reason, one line naming file, line and
key, goes to the console and the journal (the caller prints it) and into
``/var/lib/eschaton/boot-config.json``, which ``eschaton node status`` shows.

Every write is atomic (``atomic.write_atomic``), so a power cut leaves each file old or new;
the next boot renders the same files again. A manifest of what was written lets a later boot
remove a file the configuration no longer sets (an interface taken out of the mesh).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eschaton.config import ConfigError
from eschaton.field import atomic
from eschaton.field.bootconf import BootConfig, parse_boot_config
from eschaton.field.meshaddr import hostname_for
from eschaton.field.render import render

BOOT_FILE = "boot/firmware/eschaton.toml"
STATE_DIR = "var/lib/eschaton-field"
LAST_GOOD = f"{STATE_DIR}/eschaton.toml"
MANIFEST = f"{STATE_DIR}/manifest.json"
STATUS = "var/lib/eschaton/boot-config.json"
DEFAULTS = '[chain]\nbackend = "embedded"\n'
"""With no eschaton.toml (or a bad one before any good one): a node on its own embedded chain,
reachable on every wired interface through batman-adv, as the image behaved before it read the
boot partition. A house of a village says ``role = "house"`` in its file (then it follows the
chain its gateway announces)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    """The boot file was good (or absent) and is what the node now runs with."""
    applied: str
    """What was applied: the boot file, the last good copy, or the image's defaults."""
    error: str | None
    """Why the boot file was refused: one line, ``file:line: key: message``."""
    hostname: str
    changed: list[str] = field(default_factory=list)
    """The files written or removed (relative to the root)."""

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "applied": self.applied, "error": self.error,
                "file": "/" + BOOT_FILE, "hostname": self.hostname}

    def message(self) -> str:
        if self.error is None:
            return f"eschaton-field: applied {self.applied} (hostname {self.hostname})"
        return (f"eschaton-field: /{BOOT_FILE} refused, kept {self.applied}: {self.error}")


def _ids(root: Path, db: str, name: str) -> int:
    """The uid or gid of ``name`` in the root's own /etc/passwd or /etc/group (-1: none), so
    the same code works on the device and on a directory in a test."""
    try:
        for line in (root / "etc" / db).read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[0] == name:
                return int(parts[2])
    except (OSError, ValueError):
        pass
    return -1


def choose(root: Path, *, boot_mounted: bool = True) -> tuple[BootConfig, str, str | None, str | None]:
    """The configuration to apply: (config, what it is, the boot file's error, the boot file's
    text when it is good). ``boot_mounted`` False: the FAT partition is not there, which is not
    the same as no file on it (keep the last good configuration and say so)."""
    boot = root / BOOT_FILE
    error: str | None = None
    try:
        if not boot_mounted:
            error = f"/{BOOT_FILE.rsplit('/', 1)[0]}: the boot partition is not mounted"
            raise FileNotFoundError
        text = boot.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        text = None
        error = f"/{BOOT_FILE}: cannot read: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}"
    if text is not None:
        try:
            return parse_boot_config(text, "/" + BOOT_FILE), "/" + BOOT_FILE, None, text
        except ConfigError as exc:
            error = str(exc)
    last = root / LAST_GOOD
    if last.exists():
        try:
            return parse_boot_config(last.read_text(encoding="utf-8"), "/" + LAST_GOOD), \
                "the last good configuration", error, None
        except (ConfigError, OSError, UnicodeDecodeError):
            pass  # made by an older image that checked differently: fall back to the defaults
    return parse_boot_config(DEFAULTS, "defaults"), "the image's defaults", error, None


def apply(root: Path, node_id_hex: str, *, boot_mounted: bool = True) -> Outcome:
    """Check the boot file under ``root`` and write what it sets for node ``node_id_hex``."""
    boot, applied, error, good_text = choose(root, boot_mounted=boot_mounted)
    hostname = boot.name or hostname_for(node_id_hex)
    changed: list[str] = []
    written: list[str] = []
    for f in render(boot, node_id_hex, hostname):
        gid = _ids(root, "group", f.group) if f.group else -1
        dir_mode = 0o700 if f.path.startswith("root/") else 0o755
        if atomic.write_atomic(root / f.path, f.text, f.mode, gid=gid, dir_mode=dir_mode):
            changed.append(f.path)
        written.append(f.path)
    manifest = root / MANIFEST
    try:
        before = set(json.loads(manifest.read_text()))
    except (OSError, ValueError, TypeError):
        before = set()
    for stale in sorted(before - set(written)):
        if atomic.remove(root / stale):
            changed.append(stale)
    atomic.write_atomic(manifest, json.dumps(sorted(written)) + "\n", 0o600, dir_mode=0o700)
    if good_text is not None:
        atomic.write_atomic(root / LAST_GOOD, good_text, 0o600, dir_mode=0o700)
    outcome = Outcome(error is None, applied, error, hostname, changed)
    uid, gid = _ids(root, "passwd", "eschaton"), _ids(root, "group", "eschaton")
    status = root / STATUS
    if status.parent.exists():  # the node's datadir: made by tmpfiles, owned by the node
        atomic.write_atomic(status, json.dumps(outcome.to_json()) + "\n", 0o600, uid=uid, gid=gid,
                            dir_mode=0o700)
    return outcome
