"""The kit's layering (docs/ARCHITECTURE.md): no module imports from a layer above its own, no import
cycle, no module longer than a student reads in one sitting.

The imports are read from the source with :mod:`ast`, so nothing is imported to check them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "patchcore_kit"

#: Layers from the bottom up: a module may import from its own layer and the layers below it.
#: A module is placed by its first name under ``patchcore_kit`` (``data.demo.tiles`` -> ``data``).
#: A new module must be placed here (and described in docs/ARCHITECTURE.md) before the test passes.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundation: errors, files, default folders, published numbers",
        {"errors", "atomic", "paths", "paper", "version"},
    ),
    (
        "pure helpers: images, settings, metrics, thresholds, search, figures",
        {"images", "params", "metrics", "thresholds", "memory", "neighbors", "claims", "outputs", "threads", "viz"},
    ),
    ("datasets", {"data"}),
    (
        "backbone and features",
        {"backbones", "fuse", "onnx_backbone", "weights", "feature_cache", "extractor", "features", "receptive_fields"},
    ),
    ("estimators and their files", {"coreset", "base", "modelfile", "patchcore", "baselines"}),
    ("evaluation, sweeps and tuning", {"evaluate", "experiments", "tuning"}),
    ("wiring: report, widgets, notebooks' helpers, command line", {"report", "widgets", "lessons", "exercises", "cli"}),
]

#: Modules over the line limit whose split is another change's work (issue #13 / #14). Remove an
#: entry once that split has landed; the test fails when an entry is no longer needed.
MAX_LINES = 400
OVERSIZED: dict[str, str] = {}


def module_name(path: Path) -> str:
    """``patchcore_kit/data/demo/tiles.py`` -> ``data.demo.tiles``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)  # "" for patchcore_kit/__init__.py


def kit_imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The kit modules ``path`` imports (relative or absolute), as :func:`module_name` spells them.

    ``top_level_only`` leaves out imports inside functions (the ones that run only when called).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also imports nested in a top-level if/try (e.g. an optional dependency)
        nodes = [
            n
            for statement in tree.body
            for n in ast.walk(statement)
            if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
            elif node.module and (node.module == "patchcore_kit" or node.module.startswith("patchcore_kit.")):
                base, node_module = [], node.module.removeprefix("patchcore_kit").lstrip(".")
                found |= _targets(base, node_module, node.names)
                continue
            else:
                continue
            found |= _targets(base, node.module, node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("patchcore_kit."):
                    found.add(alias.name.removeprefix("patchcore_kit."))
    return {target for target in found if target != name}


def _targets(base: list[str], module: str | None, names) -> set[str]:
    stem = base + (module.split(".") if module else [])
    if module:
        return {".".join(stem)}
    # `from . import baselines`: each name is a module of that package; `from .. import __version__`
    # reads the package's metadata (a dunder name), not a module of it
    return {".".join(stem + [alias.name]) for alias in names if not alias.name.startswith("__")}


def layer_of(module: str) -> int:
    if module == "":
        return len(LAYERS)  # patchcore_kit/__init__.py: the public face, above everything
    head = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if head in members:
            return index
    raise LookupError(module)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except LookupError:
            unplaced.append(module)
    assert not unplaced, (
        f"modules without a layer: {unplaced}; add each to LAYERS in tests/test_architecture.py "
        "and describe it in docs/ARCHITECTURE.md"
    )


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for module, path in MODULES.items():
        for target in kit_imports(path):
            if layer_of(target) > layer_of(module):
                upward.append(
                    f"{module or 'patchcore_kit'} ({LAYERS[layer_of(module)][0]}) imports {target} "
                    f"({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    # Imports made when a module is loaded: a function's own import runs only when it is called
    # (backbones imports fuse inside load_backbone for that reason).
    graph = {module: kit_imports(path, top_level_only=True) for module, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(m or "patchcore_kit" for m in cycle)


def test_the_cycle_finder_and_the_import_reader_see_what_they_should(tmp_path):
    # Oracles for the two checks above: they must be able to fail.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert kit_imports(PACKAGE / "data" / "demo" / "build.py") >= {"errors", "paths", "data.demo.tiles"}
    assert "patchcore" in kit_imports(PACKAGE / "__init__.py")  # lazy, inside a function
    assert "patchcore" not in kit_imports(PACKAGE / "__init__.py", top_level_only=True)
    assert "fuse" not in kit_imports(PACKAGE / "backbones.py", top_level_only=True)
    with pytest.raises(LookupError):
        layer_of("somewhere_new")


@pytest.mark.parametrize("module", sorted(MODULES), ids=lambda m: m or "patchcore_kit")
def test_module_fits_one_sitting(module):
    path = MODULES[module]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    relative = path.relative_to(PACKAGE).as_posix()
    if relative in OVERSIZED:
        if lines <= MAX_LINES:
            pytest.fail(f"{relative} is down to {lines} lines: remove it from OVERSIZED")
        pytest.xfail(f"{relative}: {lines} lines, split pending in {OVERSIZED[relative]}")
    assert lines <= MAX_LINES, f"{relative}: {lines} lines; split it by job (house rule: about {MAX_LINES})"
