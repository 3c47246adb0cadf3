"""The demo drives nodes as any client would (their API, the chain, the core): it does not import
the CLI's command modules, which are entry points and may change with the command line."""
from __future__ import annotations

import ast
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "firmware" / "eschaton" / "demo"


def cli_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names
                      if n == "eschaton.cli" or n.startswith("eschaton.cli.")]
    return found


def test_the_demo_does_not_import_the_cli() -> None:
    assert list(DEMO.glob("*.py")), "the demo package is missing"
    assert cli_imports(DEMO) == []


def test_a_regtest_address_becomes_its_script_through_the_core() -> None:
    """What the demo mines to: the core decodes a regtest address to its scriptPubKey."""
    from eschaton.core.script import address_to_script

    spk = address_to_script("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest")
    assert spk == bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")
