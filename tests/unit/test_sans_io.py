"""The protocol cores stay sans-IO (STYLE.md rule 1): no I/O module may be imported under core/."""
from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "asyncio", "socket", "sqlite3", "sqlite_utils", "gpiozero", "lgpio", "subprocess",
    "serial", "time", "threading", "selectors", "pbk", "os",
}
CORE = Path(__file__).resolve().parents[2] / "firmware" / "eschaton" / "core"


def test_core_imports_no_io() -> None:
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(CORE)}:{node.lineno} imports {n}")
    assert not offenders, "core must stay sans-IO:\n" + "\n".join(offenders)
    assert any(CORE.rglob("*.py")), "core package is missing"
