"""The import architecture of ofa_eval (the engine) and producers (training).

Imports are read from the source (ast), module-level and function-level alike: a lazy import
is still a dependency. Two rules:
- no import circle between modules;
- one direction: producers may import ofa_eval, but no engine module imports producers, not
  even through other modules; only the command layer (ofa_eval/cli.py, ofa_eval/commands/)
  may, since it is what puts both behind one `ofa-eval` command.

`import a.b` and `from a.b import c` depend on module `a.b` (or `a.b.c` where that is a module),
not on the package `a` that Python also initialises on the way.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ofa_eval", "producers")
COMMAND_LAYER = ("ofa_eval.cli", "ofa_eval.commands")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def _imported(name: str, path: Path):
    """(dotted name, line) of everything the module imports; relative imports made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            base = ".".join(part for part in (base, node.module) if part)
            yield base, node.lineno
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)


def _project_module(dotted: str, known) -> str | None:
    """The longest prefix of `dotted` that is a project module (None for other packages)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: line of the first such import}."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        edges = {}
        for dotted, line in _imported(name, path):
            target = _project_module(dotted, modules)
            if target is not None and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _chain(graph, path: list[str]) -> str:
    steps = [path[0]] + [f"{b} (line {graph[a][b]} of {a})" for a, b in zip(path, path[1:])]
    return " -> ".join(steps)


def _path(graph, start: str, is_goal) -> list[str] | None:
    """The shortest import path (of at least one step) from `start` to a module where is_goal holds."""
    previous, queue = {start: None}, deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph[module]):
            if is_goal(target):
                path = [target, module]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return path[::-1]
            if target not in previous:
                previous[target] = module
                queue.append(target)
    return None


def import_circles(graph) -> list[list[str]]:
    """One shortest circle through each module that is on one, each circle reported once."""
    circles, seen = [], set()
    for module in sorted(graph):
        circle = _path(graph, module, lambda target: target == module)
        if circle is not None and frozenset(circle) not in seen:
            seen.add(frozenset(circle))
            circles.append(circle)
    return circles


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def engine_imports_of_producers(graph) -> list[list[str]]:
    engine = [m for m in sorted(graph) if _in(m, ("ofa_eval",)) and not _in(m, COMMAND_LAYER)]
    paths = (_path(graph, module, lambda target: _in(target, ("producers",))) for module in engine)
    return [path for path in paths if path is not None]


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "producers.tasks.base" in graph["producers.tasks.nli"]  # module level
    assert "producers.finetune" in graph["producers.heads"]  # inside a function
    assert "producers.commands" in graph["ofa_eval.cli"]  # `from producers import commands`
    assert "producers" in graph and "ofa_eval.commands" in graph


def test_no_import_circles():
    graph = import_graph()
    circles = import_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(_chain(graph, circle) for circle in circles)


def test_the_engine_never_imports_the_producers():
    graph = import_graph()
    paths = engine_imports_of_producers(graph)
    assert not paths, ("engine modules that import producers (only ofa_eval/cli.py and ofa_eval/commands/ "
                       "may):\n" + "\n".join(_chain(graph, path) for path in paths))
