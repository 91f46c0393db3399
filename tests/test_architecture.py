"""The layers of docs/design.md, checked on the code: folders, import direction, no cycles.

Every import of every module under src/vaelab is read (function-level ones included: a lazy
import is still a dependency). A module may import its own layer and the layers its layer
lists below; nothing else. A new folder fails here until it is given a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

SRC = REPO / "src" / "vaelab"
# Each layer and what it may import besides itself (docs/design.md, "On one screen").
ALLOWED = {
    "vocab": set(),  # names: metrics, tags, errors, choices
    "vae": {"vocab"},  # the model and its data
    "engines": {"vae", "vocab"},  # train jobs, report events
    "edges": {"vocab"},  # the outside world: config, the store, servers, the console
    # identity, lifecycle, ranking, packing, checkpoints, the recorder (engines: their interface)
    "rules": {"edges", "engines", "vae", "vocab"},
    "orchestration": {"rules", "engines", "edges", "vae", "vocab"},  # what entry points call
    "api": {"orchestration", "rules", "engines", "edges", "vae", "vocab"},  # vaelab/__init__
}
# Which modules may import a deep-learning framework's backend, or MLflow.
BACKENDS = ("jax", "tensorflow")


def modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(SRC.parent).with_suffix("").parts): path
        for path in SRC.rglob("*.py")
    }


def layer(module: str) -> str:
    parts = module.split(".")
    if parts == ["vaelab", "__init__"] or parts == ["vaelab"]:
        return "api"
    return parts[1]


def imports(path: Path) -> set[str]:
    """Every module the file imports, anywhere in it (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def vaelab_imports(path: Path, known: set[str]) -> set[str]:
    """The vaelab modules a file imports (a `from x import y` counts y if it is a module)."""
    return {m for m in imports(path) if m in known} | {
        m.rsplit(".", 1)[0]
        for m in imports(path)
        if m.startswith("vaelab.") and m not in known and m.rsplit(".", 1)[0] in known
    }


def test_every_folder_is_a_layer():
    folders = {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(ALLOWED) - {"api"}, "give the new folder a layer in ALLOWED"


@pytest.mark.parametrize("module", sorted(modules()))
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    path = modules()[module]
    known = {m.removesuffix(".__init__") for m in modules()}
    mine = layer(module)
    for imported in vaelab_imports(path, known):
        theirs = layer(imported)
        assert theirs == mine or theirs in ALLOWED[mine], (
            f"{module} ({mine}) imports {imported} ({theirs}): an upward or sideways import"
        )


def test_no_cycle_between_modules():
    known = {m.removesuffix(".__init__") for m in modules()}
    graph = {
        m.removesuffix(".__init__"): vaelab_imports(p, known) - {m.removesuffix(".__init__")}
        for m, p in modules().items()
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(f"{node}."):  # a package reaching into its own modules
                continue
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*trail, node, nxt]))
            if state.get(nxt) is None:
                visit(nxt, [*trail, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_only_engines_touch_a_backend_and_only_the_store_adapter_imports_mlflow():
    for module, path in modules().items():
        names = imports(path)
        backend = {n for n in names if n.split(".")[0] in BACKENDS}
        if layer(module) != "engines":
            assert not backend, f"{module} imports {backend}: only engines are backend-specific"
        if module != "vaelab.edges.tracking":
            assert not {n for n in names if n.split(".")[0] == "mlflow"}, module
