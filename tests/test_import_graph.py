"""No import cycle among dfd's modules: each stage imports only the stages below it.

Read from the source with ast (nothing is imported): the imports a module runs when it is imported,
i.e. at module level and in class bodies, not inside functions (a deferred import is how a module
reaches a heavier one at call time) nor under `if __name__ == "__main__"` or `if TYPE_CHECKING`.
`from dfd.pkg import name` points at dfd.pkg.name when that is a module, else at dfd.pkg.

Counting the deferred imports too, the one cycle left is dfd.convert.convert <-> beam_engine: convert
loads the optional Beam engine only for --engine=beam, and the engine's Beam workers call back into
convert's per-file code. (dfd.tuning.results <-> tuners was the other, until tuning/objectives.py.)
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted((ROOT / "dfd").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _runs_at_import(test: ast.expr) -> bool:
    source = ast.unparse(test)
    return "__name__" not in source and "TYPE_CHECKING" not in source


def _imports(tree: ast.Module) -> list[ast.stmt]:
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            pending += (node.body if _runs_at_import(node.test) else []) + node.orelse
        elif isinstance(node, (ast.Try, ast.With, ast.ClassDef)):
            pending += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                pending += handler.body
    return found


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module name -> the dfd modules it imports when imported (with `deferred`: anywhere in it)."""
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        tree = ast.parse(path.read_text(), str(path))
        nodes = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))] if deferred \
            else _imports(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:   # a relative import
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            edges.update(target for target in targets if target in modules and target != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that reach each other (Tarjan), those of more than one module."""
    index, low, stack, groups = {}, {}, [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while not group or node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_checkers_find_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a", "d"}, "d": {"c"}, "e": set()}) == [
        {"a", "b"}, {"c", "d"}]


def test_dfd_has_no_import_cycle():
    graph = import_graph()
    assert {"dfd.cli", "dfd.train", "dfd.preprocess.records", "dfd.tuning.objectives"} <= set(graph)
    assert "dfd.tuning.objectives" in graph["dfd.tuning.results"] and "dfd.tuning.results" in graph["dfd.tuning.tuners"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_deferred_imports_close_only_the_beam_engine_cycle():
    assert strongly_connected(import_graph(deferred=True)) == [{"dfd.convert.convert", "dfd.convert.beam_engine"}]
