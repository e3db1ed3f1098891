"""The import architecture of ofa_eval (the engine) and producers (training).

Imports are read from the source (ast), module-level and function-level alike: a lazy import
is still a dependency, and a package's face (its `__init__`) depends on the modules it exports,
lazily exported ones included. The rules:
- no import circle between modules;
- one direction between the engine's layers (LAYERS, lowest first): a module imports only from
  its own package or from a package in a lower layer, never from a higher one or a sibling;
- the statistics path never reaches torch or transformers, not even through other modules;
- producers may import ofa_eval, but no engine module imports producers, not even through
  other modules; only the command layer (ofa_eval/cli.py, ofa_eval/commands/) may, since it is
  what puts both behind one `ofa-eval` command.

`import a.b` and `from a.b import c` depend on module `a.b` (or `a.b.c` where that is a module),
not on the package `a` that Python also initialises on the way.
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ofa_eval", "producers")
COMMAND_LAYER = ("ofa_eval.cli", "ofa_eval.commands")
# The engine's packages as the data flows, lowest first; packages in one layer are siblings that
# do not import each other. `ofa_eval.api` is the notebook API, which `ofa_eval` itself exposes.
LAYERS = (
    ("ofa_eval.common",),
    ("ofa_eval.statistics", "ofa_eval.tasks", "ofa_eval.weights", "ofa_eval.jobs"),
    ("ofa_eval.store",),
    ("ofa_eval.artifacts",),
    ("ofa_eval.evaluation",),
    ("ofa_eval.averages",),
    ("ofa_eval.results",),
    ("ofa_eval.api",),
    ("ofa_eval",),
    ("ofa_eval.commands",),
    ("ofa_eval.cli",),
)
# What `protocol`, `sql`, `check`, `grid`, `report` and the notebook API import: never torch.
STATISTICS_PATH = ("ofa_eval.common", "ofa_eval.statistics", "ofa_eval.tasks", "ofa_eval.store",
                   "ofa_eval.artifacts", "ofa_eval.evaluation", "ofa_eval.results", "ofa_eval.api",
                   "ofa_eval.weights.safetensors_file")
HEAVY = ("torch", "transformers")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def project_modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def _imported(name: str, path: Path):
    """(dotted name, line) of everything the module imports; relative imports made absolute.

    `from a import b` depends on `a.b` alone where that is a module (Python initialises `a` on
    the way, but a package's face is its own module); a package's `lazy_face` mapping counts as
    importing the modules it names.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = project_modules()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            base = ".".join(part for part in (base, node.module) if part)
            names = [f"{base}.{alias.name}" for alias in node.names]
            if not all(dotted in modules for dotted in names):
                yield base, node.lineno
            yield from ((dotted, node.lineno) for dotted in names)
        elif _is_lazy_face(node):
            yield from ((f"{name}.{value.value}", node.lineno) for value in node.args[1].values)


def _is_lazy_face(node) -> bool:
    return (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_face" and len(node.args) == 2
            and isinstance(node.args[1], ast.Dict))


def _project_module(dotted: str, known) -> str | None:
    """The longest prefix of `dotted` that is a project module (None for other packages)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_graph(keep_external=()) -> dict[str, dict[str, int]]:
    """module -> {imported project module (or top-level package in keep_external): line of its first import}."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        edges = {}
        for dotted, line in _imported(name, path):
            target = _project_module(dotted, modules) or _external(dotted, keep_external)
            if target is not None and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    for external in keep_external:
        graph.setdefault(external, {})
    return graph


def _external(dotted: str, keep) -> str | None:
    top = dotted.partition(".")[0]
    return top if top in keep else None


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


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest package that holds `module` (None outside the engine)."""
    best = None
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if _in(module, (package,)) and (best is None or len(package) > len(best[1])):
                best = (index, package)
    return best


def upward_imports(graph) -> list[str]:
    """'a imports b (line n)' for every import of a higher layer or a sibling package."""
    wrong = []
    for module, edges in sorted(graph.items()):
        source = layer_of(module)
        for target, line in sorted(edges.items()):
            goal = layer_of(target)
            if source is None or goal is None or goal[1] == source[1]:
                continue
            if goal[0] >= source[0]:
                wrong.append(f"{module} imports {target} (line {line}): layer {goal[1]} is not below {source[1]}")
    return wrong


def statistics_path_to_heavy(graph) -> list[list[str]]:
    start = [m for m in sorted(graph) if _in(m, STATISTICS_PATH)]
    paths = (_path(graph, module, lambda target: target in HEAVY) for module in start)
    return [path for path in paths if path is not None]


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


def test_every_engine_module_has_a_layer():
    engine = [m for m in import_graph() if _in(m, ("ofa_eval",))]
    assert [m for m in engine if layer_of(m) is None] == []
    assert layer_of("ofa_eval.artifacts.ingest") == (3, "ofa_eval.artifacts")
    assert layer_of("ofa_eval") == (8, "ofa_eval")


def test_layers_import_only_downward():
    wrong = upward_imports(import_graph())
    assert not wrong, "imports against the layers (LAYERS in this file):\n" + "\n".join(wrong)


def test_the_rule_catches_an_upward_import():
    graph = {"ofa_eval.store.database": {"ofa_eval.evaluation.pool": 3}, "ofa_eval.evaluation.pool": {}}
    assert upward_imports(graph) == ["ofa_eval.store.database imports ofa_eval.evaluation.pool (line 3): layer "
                                     "ofa_eval.evaluation is not below ofa_eval.store"]
    siblings = {"ofa_eval.tasks.registry": {"ofa_eval.statistics.exact": 1}, "ofa_eval.statistics.exact": {}}
    assert len(upward_imports(siblings)) == 1


def test_the_statistics_path_never_reaches_torch():
    graph = import_graph(keep_external=HEAVY)
    assert "torch" in graph["ofa_eval.weights.averaging"]  # the rule sees third-party imports
    paths = statistics_path_to_heavy(graph)
    assert not paths, "statistics-path modules that reach torch or transformers:\n" + "\n".join(
        _chain(graph, path) for path in paths)


def test_no_import_circles():
    graph = import_graph()
    circles = import_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(_chain(graph, circle) for circle in circles)


def test_the_engine_never_imports_the_producers():
    graph = import_graph()
    paths = engine_imports_of_producers(graph)
    assert not paths, ("engine modules that import producers (only ofa_eval/cli.py and ofa_eval/commands/ "
                       "may):\n" + "\n".join(_chain(graph, path) for path in paths))
