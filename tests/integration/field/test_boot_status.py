"""The boot step as a real process on a directory standing for the root, then the real node on
what it wrote: a refused eschaton.toml is said in one line (file:line: key) on the step's
output, and ``eschaton node status`` of the running node shows it; the node runs with the key
the boot step made."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.node.harness import NodeProc

pytestmark = pytest.mark.timeout(120)


def boot(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eschaton.field", "boot", "--root", str(root),
                           "--no-grow", "--no-hostname"], capture_output=True, text=True, timeout=60)


def test_a_refused_file_is_reported_by_the_boot_step_and_by_node_status(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "var/lib/eschaton").mkdir(parents=True, mode=0o700)
    (root / "boot/firmware/eschaton.toml").write_text('[node]\nrole = "gatewya"\n')
    r = boot(root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("eschaton-field: made the node key: node id ")
    node_id = lines[0].rsplit(" ", 1)[1]
    assert lines[1] == ("eschaton-field: /boot/firmware/eschaton.toml refused, kept the image's "
                        "defaults: /boot/firmware/eschaton.toml:2: node.role: must be one of house, "
                        "gateway (got 'gatewya')")
    # The node, on the datadir the boot step prepared (its own config, on loopback).
    n = NodeProc(root / "var/lib", "eschaton", chain_dir=None)
    try:
        n.start().wait_ready()
        st = n.api("node.status")
        assert st["id"] == node_id
        assert st["boot"]["config"]["ok"] is False
        assert st["boot"]["config"]["applied"] == "the image's defaults"
        assert st["boot"]["config"]["error"].startswith("/boot/firmware/eschaton.toml:2: node.role:")
    finally:
        n.stop()
    # Fixed and booted again: applied, same key.
    (root / "boot/firmware/eschaton.toml").write_text('[node]\nrole = "gateway"\nname = "gw"\n')
    r = boot(root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["eschaton-field: applied /boot/firmware/eschaton.toml (hostname gw)"]
    st = json.loads((root / "var/lib/eschaton/boot-config.json").read_text())
    assert st["ok"] is True and st["error"] is None


def test_check_command(tmp_path: Path) -> None:
    f = tmp_path / "eschaton.toml"
    f.write_text('[mesh]\nprefix = "10.0.0.0/31"\n')
    r = subprocess.run([sys.executable, "-m", "eschaton.field", "check", str(f)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == f"error: {f}:2: mesh.prefix: must be /8 to /29\n"
