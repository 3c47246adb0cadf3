"""The configuration sits below the node: ``config/`` reads and checks the TOML and imports none
of the runtime it configures (the daemon, the network, the chain, the channels). What a section
needs to check a value (a URL, a node id, a unit) comes from the sans-IO core or the drivers'
own rules, so that reading a config never starts, loads or depends on the node's machinery."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "firmware" / "eschaton" / "config"
RUNTIME = ("eschaton.daemon", "eschaton.net", "eschaton.chain", "eschaton.channel",
           "eschaton.wallet", "eschaton.api", "eschaton.cli", "eschaton.metering",
           "eschaton.microgrid")


def _imports(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            out.append((node.lineno, str(node.args[0].value)))  # importlib.import_module("...")
    return out


def runtime_imports(root: Path) -> list[str]:
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for line, name in _imports(path):
            if any(name == r or name.startswith(r + ".") for r in RUNTIME):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return offenders


def test_config_imports_no_runtime_module() -> None:
    assert list(CONFIG.rglob("*.py")), "the config package is missing"
    offenders = runtime_imports(CONFIG)
    assert not offenders, "config/ must not import the runtime:\n" + "\n".join(offenders)


def test_the_check_sees_an_import_of_the_runtime(tmp_path: Path) -> None:
    """The walk finds every form of import (module level, inside a function, from-import,
    import_module), so that the test above cannot pass by not looking."""
    bad = tmp_path / "bad.py"
    bad.write_text("import eschaton.daemon.node\n"
                   "def f():\n    from eschaton.net.transport import parse_url\n"
                   "from eschaton import chain\n"
                   "import importlib\nimportlib.import_module('eschaton.channel.driver')\n")
    found = [name for _, name in _imports(bad)]
    assert "eschaton.daemon.node" in found and "eschaton.net.transport" in found
    assert "eschaton.chain" in found and "eschaton.channel.driver" in found


def test_the_schemes_the_config_accepts_are_the_registered_transports() -> None:
    """``core.url.SCHEMES`` lets the config check a URL without loading the transports; it must
    name exactly the transports that register themselves."""
    from eschaton.core.url import SCHEMES
    from eschaton.net.transport import schemes

    assert tuple(schemes()) == SCHEMES
