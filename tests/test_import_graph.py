"""The import graph of ``src/longctx`` has no cycles, and no stage imports another stage's
command-line modules (``cli``/``commands``): only the top CLI (``longctx.cli`` and the stage
groups it registers, ``longctx.stage_cli``) puts commands together.

Built statically: every module is parsed with ``ast`` and every ``import longctx.x`` /
``from longctx.x import y`` / relative import becomes an edge, including imports inside
functions (a cycle that only closes at call time is still a cycle in the design).
Imports under ``if TYPE_CHECKING:`` are not edges: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "longctx"
STAGES = ("data", "mix", "pack", "train", "eval", "report", "ablate")
CLI_MODULES = ("cli", "commands")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` names (``longctx.a.b.func`` -> ``longctx.a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # ``from pkg import sub`` imports the submodule when there is one.
                targets = [f"{module}.{alias.name}" for alias in node.names] or [module]
            for target in targets:
                if not target.startswith(PACKAGE):
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles = []
    for comp in components:
        members = set(comp)
        # Shortest path from the component's first module back to itself, inside it.
        start = comp[0]
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def test_graph_sees_known_edges():
    graph = import_graph()
    assert "longctx.cli" in graph
    assert "longctx.errors" in graph["longctx.cliopts"]  # the CLI error handler
    # function-level imports count
    assert "longctx.train.loss" in graph["longctx.train.model"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/longctx:\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles
    )


def test_find_cycles_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def cross_stage_cli_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) where a stage module imports another stage's cli/commands."""
    out = set()
    for name, targets in graph.items():
        own = _stage(name)
        if own is None:
            continue
        for t in targets:
            parts = t.split(".")
            if _stage(t) not in (None, own) and len(parts) > 2 and parts[2] in CLI_MODULES:
                out.add((name, t))
    return out


def test_no_stage_imports_another_stages_cli():
    found = cross_stage_cli_imports(import_graph())
    assert not found, "a stage imports another stage's CLI:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in sorted(found))


def test_cross_stage_cli_rule_sees_a_violation():
    graph = {"longctx.data.stats": {"longctx.pack.commands", "longctx.data.cli"},
             "longctx.pack.build": {"longctx.eval.cli", "longctx.eval.loss"},
             "longctx.cli": {"longctx.data.commands"}, "longctx.demo": {"longctx.eval.cli"}}
    assert cross_stage_cli_imports(graph) == {("longctx.data.stats", "longctx.pack.commands"),
                                              ("longctx.pack.build", "longctx.eval.cli")}


# Lower layers never import the layers built on them: packing uses the data readers and the
# mixture rules, never the reverse (a pool, a reader or a selection rule stays usable alone).
LAYER_BANS = {"longctx.data": ("longctx.pack",), "longctx.mix": ("longctx.pack",)}


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, target) pairs where a module imports a layer its package must not use."""
    return {
        (name, t)
        for name, targets in graph.items()
        for low, banned in LAYER_BANS.items() if _in(name, low)
        for t in targets if any(_in(t, b) for b in banned)
    }


def test_data_and_mix_never_import_pack():
    found = layer_violations(import_graph())
    assert not found, "a lower layer imports pack:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in sorted(found))


def test_layer_rule_sees_a_violation():
    graph = {"longctx.mix.select": {"longctx.pack.scan", "longctx.data.readers"},
             "longctx.data.workers": {"longctx.pack"}, "longctx.pack.build": {"longctx.mix.select"},
             "longctx.mixer": {"longctx.pack.scan"}}
    assert layer_violations(graph) == {("longctx.mix.select", "longctx.pack.scan"),
                                       ("longctx.data.workers", "longctx.pack")}
