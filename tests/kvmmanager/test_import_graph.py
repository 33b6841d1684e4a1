"""No import cycle in the product, hidden or not (issue 18): every `import` and `from ...
import` of src/ counts, also one under `if TYPE_CHECKING:` or inside a function, so a
cycle cannot be dodged by moving an import out of sight. Read from the source text (ast),
nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    def known(name: str) -> str | None:
        # `from a.b import c`: the module a.b.c when it is one, else a.b (or the nearest
        # package above that exists).
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                found = known(target)
                if found is not None and found != mod:
                    edges[mod].add(found)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_reader_finds_a_cycle_hidden_under_type_checking(tmp_path: Path) -> None:
    # The check itself: two modules importing each other, one of them only for typing.
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from b import B\n")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import A\n")
    modules = {"a": a, "b": b}
    assert _cycles(_edges(modules)) == [["a", "b"]]


def test_src_has_no_import_cycle() -> None:
    cycles = _cycles(_edges(_modules()))
    assert cycles == [], "import cycles (modules that import each other in a loop): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )
