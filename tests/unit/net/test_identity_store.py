"""The node key file: created once, 0600 whatever the umask, reloaded, never leaked to logs."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from eschaton.core.link.identity import IdentityError
from eschaton.net.identity import create_identity, key_path, load_identity, load_or_create_identity


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_created_0600_regardless_of_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        keys = load_or_create_identity(tmp_path / "d")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(key_path(tmp_path / "d")).st_mode)
    assert mode == 0o600
    assert load_or_create_identity(tmp_path / "d").node_id == keys.node_id
    assert not [p for p in (tmp_path / "d").iterdir() if p.name != "node_key"]  # no temp left


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    keys = create_identity(tmp_path)
    with pytest.raises(IdentityError, match="already exists"):
        create_identity(tmp_path)
    assert load_identity(tmp_path).node_id == keys.node_id


def test_exposed_or_corrupt_key_is_refused(tmp_path: Path) -> None:
    create_identity(tmp_path)
    os.chmod(key_path(tmp_path), 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(tmp_path)
    os.chmod(key_path(tmp_path), 0o600)
    key_path(tmp_path).write_text("garbage\n")
    with pytest.raises(IdentityError, match="not an Eschaton node key"):
        load_identity(tmp_path)


def test_secret_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = load_or_create_identity(tmp_path)
    logging.getLogger("test").info("node %s %r", keys, keys)
    seed = keys.seed().hex()
    assert seed not in caplog.text and seed not in repr(keys)
    assert keys.node_id.short() in caplog.text
