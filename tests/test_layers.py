"""The package's layers: imports only go downwards, and no two modules import each other at load time.

The layers are the README's "How the code is laid out": the core (what the command line needs),
the chapters (one idea each, built on the core), the apps (the ``fedad`` command and the Flower apps)
and the course support (the exercise checks). A module may import its own layer and the layers
below it; ``fedad_tutorial/__init__.py`` (the version) sits below everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fedad_tutorial

PACKAGE = Path(fedad_tutorial.__file__).parent

CORE = {"errors", "limits", "atomic", "outputs", "threads", "params", "config", "defaults", "data", "csvio", "scaling",
        "models", "training", "vectorized", "federated", "thresholds", "metrics", "detector", "scoring", "runs",
        "plots", "explain", "progress", "tensorboard_log", "partition", "center", "privacy", "forest",
        "ensemble"}
CHAPTERS = {"chapters"}  # the sub-package fedad_tutorial.chapters, one module per chapter
APPS = {"cli", "flag_table", "flower"}
COURSE = {"exercises"}
#: Which layers each layer may import (itself included).
ALLOWED = {
    "core": {"core"},
    "chapters": {"core", "chapters"},
    "apps": {"core", "chapters", "apps"},
    "course": {"core", "chapters", "course"},
}


def _layer(module: str) -> str:
    top = module.split(".")[0]
    for name, members in (("core", CORE), ("chapters", CHAPTERS), ("apps", APPS), ("course", COURSE)):
        if top in members:
            return name
    raise AssertionError(f"fedad_tutorial.{module} belongs to no layer: add it to tests/test_layers.py")


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
            for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" or path.parent != PACKAGE}


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """The package modules ``path`` imports (``fedad_tutorial.`` stripped), anywhere or at load time only."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module.rsplit(".", 1)[0] if "." in module else ""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
                if not name.startswith("fedad_tutorial"):
                    continue
                name = name.removeprefix("fedad_tutorial").lstrip(".")
            if not name:  # ``from fedad_tutorial import x``
                found.update(alias.name for alias in node.names if alias.name != "__version__")
            else:
                found.add(name)
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("fedad_tutorial.") for alias in node.names
                         if alias.name.startswith("fedad_tutorial."))
    return {name.removesuffix(".__init__") for name in found if name}


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_go_downwards(module):
    path = _modules()[module]
    layer = _layer(module)
    wrong = {name for name in _imports(path, module, top_level_only=False) if _layer(name) not in ALLOWED[layer]}
    assert not wrong, f"{module} ({layer}) imports {sorted(wrong)} from a layer above it"


def test_no_import_cycles_at_load_time():
    modules = _modules()
    graph = {m: {d for d in _imports(p, m, top_level_only=True) if d in modules} for m, p in modules.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node):], node]))
        if node in done:
            return
        for dep in graph[node]:
            visit(dep, [*path, node])
        done.add(node)

    for module in graph:
        visit(module, [])


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself can fail: a core module importing the command line is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from fedad_tutorial.cli import main\n")
    assert _imports(bad, "metrics", top_level_only=False) == {"cli"}
    assert _layer("cli") not in ALLOWED[_layer("metrics")]
