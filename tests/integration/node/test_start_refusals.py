"""Directories that cannot be used (a file in the way, a read-only mount) stop the node and the CLI
with one line on stderr and exit code 1, never a traceback."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_root, need_tool
from tests.integration.node.harness import CLI_TIMEOUT, NodeProc, _env, eschaton_cmd, run_cli

pytestmark = pytest.mark.timeout(120)


def _one_line(p: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, (p.returncode, p.stderr[-2000:])
    assert lines[0].startswith("eschaton: ") and "Traceback" not in p.stdout + p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_a_node_datadir_that_is_a_file(tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "a", chain_dir=None)
    n.datadir.write_text("not a directory\n")
    p = run_cli("node", "run", "--config", str(n.config), check=False)
    _one_line(p, "[node] datadir", str(n.datadir), "not a directory")
    assert n.datadir.read_text() == "not a directory\n"


@pytest.mark.parametrize("where", ["parent", "itself"])
def test_a_chain_datadir_that_cannot_be_created(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    # parent: [chain] datadir under a regular file; itself: <chain datadir>/chain is a file.
    chain_dir = blocker / "chain" if where == "parent" else tmp_path / "c"
    if where == "itself":
        chain_dir.mkdir()
        (chain_dir / "chain").write_text("")
    n = NodeProc(tmp_path, "a", chain_dir=chain_dir)
    p = run_cli("node", "run", "--config", str(n.config), check=False)
    _one_line(p, "chain directory", str(chain_dir / "chain"))


@pytest.mark.parametrize("which", ["chain", "node"])
def test_a_datadir_on_a_read_only_mount(tmp_path: Path, which: str) -> None:
    need_root()
    unshare = need_tool("unshare")
    ro = tmp_path / "ro"
    ro.mkdir()
    n = NodeProc(tmp_path, "a", chain_dir=ro / "chain" if which == "chain" else None)
    if which == "node":
        n.config.write_text(n.config.read_text().replace(str(n.datadir), str(ro / "node")))
    # A private mount namespace: the read-only tmpfs exists for this one process only.
    script = f'mount -t tmpfs -o ro tmpfs "{ro}" && exec "$@"'
    p = subprocess.run([unshare, "-m", "sh", "-c", script, "sh", *eschaton_cmd(), "node", "run",
                        "--config", str(n.config)], capture_output=True, text=True, env=_env(),
                       timeout=CLI_TIMEOUT)
    _one_line(p, "chain directory" if which == "chain" else "[node] datadir", "Read-only file system")


@pytest.mark.parametrize("argv", [
    ("node", "status"), ("chain", "info"), ("wallet", "balance"), ("chain", "mine", "1"),
])
def test_cli_datadirs_that_are_files(tmp_path: Path, argv: tuple[str, ...]) -> None:
    f = tmp_path / "file"
    f.write_text("")
    for datadir in (f, f / "below"):
        p = run_cli(*argv, "--datadir", str(datadir), check=False)
        line = _one_line(p)
        assert str(datadir) in line, line
