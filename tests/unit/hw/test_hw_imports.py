"""The hw package's modules import one another without a circle (every import counts, also one
inside a function): the factory sits below the mocks built on it, so either can be read, loaded
and changed alone."""
from __future__ import annotations

import ast
from pathlib import Path

HW = Path(__file__).resolve().parents[3] / "hw"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> names of the package's modules it imports."""
    prefix = package.name
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps |= {n.split(".")[1] for n in names
                     if n.startswith(prefix + ".") and (package / f"{n.split('.')[1]}.py").exists()}
        graph[path.stem] = deps - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_hw_modules_import_without_a_circle() -> None:
    graph = import_graph(HW)
    assert {"factory", "mock", "mock_lines", "mock_pins"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
