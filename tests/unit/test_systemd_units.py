"""The shipped unit files pass ``systemd-analyze verify``."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need_tool

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"


def test_service_unit_verifies(tmp_path: Path) -> None:
    need_tool("systemd-analyze")
    unit = (SYSTEMD / "eschaton.service").read_text()
    # verify checks that ExecStart exists; point it at this venv's console script.
    exe = Path(sys.executable).parent / "eschaton"
    assert exe.exists()
    assert "ExecStart=/opt/eschaton/venv/bin/eschaton " in unit
    unit = unit.replace("/opt/eschaton/venv/bin/eschaton", str(exe))
    (tmp_path / "eschaton.service").write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "eschaton.service")],
                       capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "eschaton.service" in line and "Failed to" not in line.split(":", 1)[0]]
    assert r.returncode == 0, r.stdout + r.stderr
    assert not problems, "\n".join(problems)


def test_sysusers_and_tmpfiles_parse(tmp_path: Path) -> None:
    need_tool("systemd-sysusers")
    r = subprocess.run(["systemd-sysusers", "--dry-run", f"--root={tmp_path}",
                        str(SYSTEMD / "eschaton.sysusers.conf")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if shutil.which("systemd-tmpfiles"):
        # --root keeps it off the host; it must not complain about the syntax.
        r = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                            str(SYSTEMD / "eschaton.tmpfiles.conf")], capture_output=True, text=True, timeout=60)
        assert "Failed to parse" not in r.stderr and "Unknown" not in r.stderr, r.stderr
