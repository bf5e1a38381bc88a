"""The package's layering, read from the source: no import cycles inside ``lossyload/`` (imports inside
functions count, and so do ``if TYPE_CHECKING:`` blocks: a cycle hidden from the interpreter is still one),
nothing outside the lab imports it -- the one exception is the ``lossyload`` CLI's command table, which names
the lab's ``demo`` entry by module path -- and the benchmarks (``benchmarks/``) stand on the library alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lossyload"
BENCHMARKS = ROOT.parent / "benchmarks"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The lossyload modules an import statement loads (a ``from X import name`` loads X.name when that is a
    module, else X)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = importer if is_package else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    target = (f"{base}.{node.module}" if base and node.module else base or node.module) if node.level else node.module
    if not target or not target.startswith("lossyload"):
        return []
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    plain = len(subs) < len(node.names)
    return subs + ([target] if plain and target in MODULES else [])


def imports(name: str) -> set[str]:
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(resolve(name, path.name == "__init__.py", node))
    out.discard(name)
    return out


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement of ``path`` names (absolute imports), anywhere in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return out


GRAPH = {name: imports(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    assert "lossyload.media.jpeg" in GRAPH["lossyload.codecs.rgb"]
    assert "lossyload.lab.models" in GRAPH["lossyload.lab.trainer"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("lossyload.lab")))
def test_the_library_never_imports_the_lab(name: str) -> None:
    assert not {m for m in GRAPH[name] if m.startswith("lossyload.lab")}, name
    text = MODULES[name].read_text()
    if name != "lossyload.cli":
        assert "lossyload.lab" not in text and ".lab" not in text.replace(".label", ""), name


def test_type_checking_imports_count() -> None:
    assert "lossyload.shard.spec" in GRAPH["lossyload.shard.distributed"]
    assert "lossyload.shard.job" not in GRAPH["lossyload.shard.distributed"]


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_the_benchmarks_never_import_the_lab(path: Path) -> None:
    names = imported_names(path)
    assert any(n.startswith("lossyload") for n in names) or path.name == "__init__.py", path.name
    assert not {n for n in names if n.startswith("lossyload.lab")}, path.name
    assert "lossyload.lab" not in path.read_text(), path.name


def test_the_cli_names_the_lab_only_for_the_demo() -> None:
    from lossyload.cli import COMMANDS

    assert [k for k, (module, *_) in COMMANDS.items() if module.startswith("lossyload.lab")] == ["demo"]
