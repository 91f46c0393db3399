"""The layers of docs/design.md, checked on the code: import direction, no cycles, who may
import a framework's backend, MLflow or the config, and which modules exist.

The map is read from docs/design.md itself (its fenced `layers` and `imports` blocks and its
table of modules), so the page and this test cannot disagree. Every import of every module
under src/ is read: function-level ones (a lazy import is still a dependency) and relative ones
(resolved from the module's package). The checks are functions of a source root, so the
planted-violation tests at the end run them on a copy of src/ with one bad line added, and
`VAELAB_ARCH_ROOT=<a copy of src>` runs the whole file on another tree.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

DESIGN = REPO / "docs" / "design.md"
ROOT = Path(os.environ.get("VAELAB_ARCH_ROOT", REPO / "src"))
# The application's own package: its folders are layers, its root modules the layer `api`.
APP = "vaelab"
# Setting this variable chooses Keras's backend: the `imports` block says who may.
SELECTS_BACKEND = "KERAS_BACKEND"
# The limit (docs/design.md, "the modules"): past it a module holds several concerns.
MAX_LINES = 400


# -- the map, from docs/design.md ------------------------------------------------------------


def block(kind: str) -> dict[str, set[str]]:
    """A fenced ```<kind> block of design.md as {name: the names after its colon}."""
    found = re.search(rf"^```{kind}\n(.*?)^```", DESIGN.read_text(), re.MULTILINE | re.DOTALL)
    assert found, f"docs/design.md has no ```{kind} block: the map this test reads"
    rules = {}
    for line in found.group(1).splitlines():
        line = line.split("#", 1)[0].strip()  # a comment says why; it is not read
        if line:
            name, _, allowed = line.partition(":")
            rules[name.strip()] = set(allowed.split())
    return rules


LAYERS = block("layers")  # layer -> the layers it may import besides its own
IMPORTS = block("imports")  # outside package (or SELECTS_BACKEND) -> the layers or modules


# -- the code, from a source root ------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """An import: `import a, b` (level None) or `from <level dots><module> import names`."""

    level: int | None
    module: str
    names: tuple[str, ...]


def statements(path: Path) -> tuple[Statement, ...]:
    """Every import statement of the file, anywhere in it (top level or in a function)."""
    return _statements(path.read_text())


@functools.cache
def _statements(text: str) -> tuple[Statement, ...]:
    # Once per text: the planted copies of src/ share all their files but one with src/.
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.append(Statement(None, "", tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            found.append(Statement(node.level, node.module or "", names))
    return tuple(found)


def modules(root: Path) -> dict[str, Path]:
    """Every module of every package under root, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "__pycache__" in parts or parts[0].endswith(".egg-info"):
            continue
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


def layer(module: str) -> str:
    """A folder of vaelab (its root modules: `api`), or a package beside it under src/."""
    parts = module.split(".")
    if parts[0] != APP:
        return parts[0]
    return "api" if len(parts) == 1 or parts[1] == "api" else parts[1]


def absolute(module: str, path: Path, statement: Statement) -> str:
    """The module a `from ... import` names, relative ones resolved from the module's package."""
    if not statement.level:
        return statement.module
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (statement.level - 1)]
    return ".".join([*base, statement.module] if statement.module else base)


def imports(module: str, path: Path) -> set[str]:
    """Every name the file imports: `from a import b` gives a and a.b."""
    found = set()
    for statement in statements(path):
        if statement.level is None:
            found |= set(statement.names)
        else:
            source = absolute(module, path, statement)
            found |= {source, *(f"{source}.{name}" for name in statement.names)}
    return found


def project_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules the file depends on: `from pkg import mod` is mod (pkg only runs
    as its parent, as it does for every import of mod); `from mod import name` is mod."""
    found = set()
    for statement in statements(path):
        if statement.level is None:
            found |= set(statement.names)
            continue
        source = absolute(module, path, statement)
        for name in statement.names:
            found.add(f"{source}.{name}" if f"{source}.{name}" in known else source)
    return (found & known) - {module}


def graph(root: Path) -> dict[str, set[str]]:
    """Each module -> the project's modules it imports."""
    found = modules(root)
    return {m: project_imports(m, p, set(found)) for m, p in found.items()}


def sets_backend(path: Path) -> bool:
    """Whether the file writes KERAS_BACKEND (os.environ[...] =, setdefault, update, putenv)."""
    return _sets_backend(path.read_text())


@functools.cache
def _sets_backend(text: str) -> bool:
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Subscript) and _is_selector(t.slice) for t in targets):
                return True
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("setdefault", "putenv", "__setitem__", "update")
            and (
                any(_is_selector(arg) for arg in node.args)
                or any(k.arg == SELECTS_BACKEND for k in node.keywords)
            )
        ):
            return True
    return False


def _is_selector(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == SELECTS_BACKEND


def permitted(module: str, allowed: set[str]) -> bool:
    """A layer named, or the module (or a package above it) named by its dotted name."""
    return layer(module) in allowed or any(
        module == name or module.startswith(f"{name}.") for name in allowed if "." in name
    )


# -- the checks: each returns what it found wrong, one line per violation --------------------


def layerless(root: Path) -> list[str]:
    """Modules in a folder (or a package beside vaelab) that design.md gives no layer."""
    return sorted(
        f"{m}: `{layer(m)}` has no line in design.md's layers block" for m in modules(root)
        if layer(m) not in LAYERS
    )  # fmt: skip


def upward_imports(root: Path) -> list[str]:
    """An import of a layer that the importer's line does not list (upward or sideways)."""
    found = []
    for module, imported in graph(root).items():
        mine = layer(module)
        for other in sorted(imported):
            theirs = layer(other)
            if mine in LAYERS and theirs != mine and theirs not in LAYERS[mine]:
                found.append(f"{module} ({mine}) imports {other} ({theirs})")
    return found


def cycles(root: Path) -> list[str]:
    """Import cycles between modules (a package importing its own modules is no cycle)."""
    edges, state, found = graph(root), {}, []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        path = [*trail, node]
        for nxt in sorted(edges[node]):
            if nxt.startswith(f"{node}."):
                continue
            if state.get(nxt) == "open":  # back on the path: a cycle
                found.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, path)
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    return found


def outside_imports(root: Path) -> list[str]:
    """A backend, MLflow or the config imported (or KERAS_BACKEND set) where design.md says not."""
    found = []
    for module, path in modules(root).items():
        used = {name.split(".")[0] for name in imports(module, path)}
        for package, allowed in IMPORTS.items():
            if package == SELECTS_BACKEND and sets_backend(path):
                verb = "sets"
            elif package in used:
                verb = "imports"
            else:
                continue
            if not permitted(module, allowed):
                found.append(f"{module} ({layer(module)}) {verb} {package}")
    return found


def violations(root: Path) -> set[str]:
    return {*layerless(root), *upward_imports(root), *cycles(root), *outside_imports(root)}


# -- the tree as it is -----------------------------------------------------------------------


def test_the_map_names_only_layers_and_modules_that_exist():
    """A misspelt layer, or a module renamed since the map named it, would silently allow
    nothing (or an exception nobody has any more)."""
    known = set(modules(ROOT))
    named = {entry for allowed in [*LAYERS.values(), *IMPORTS.values()] for entry in allowed}
    assert not named - set(LAYERS) - known, "design.md names no such layer or module"


def test_every_folder_and_package_has_a_layer():
    assert not layerless(ROOT), "\n".join(layerless(ROOT))


def test_a_module_imports_only_its_own_layer_and_those_its_line_lists():
    found = upward_imports(ROOT)
    assert not found, "upward or sideways imports:\n" + "\n".join(found)


def test_no_cycle_between_modules():
    found = cycles(ROOT)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_backends_mlflow_and_the_config_are_imported_only_where_design_md_says():
    found = outside_imports(ROOT)
    assert not found, "see design.md's imports block:\n" + "\n".join(found)


def test_no_module_is_over_the_limit():
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules(ROOT).items()}
    over = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (one concern each): {over}"


# -- the table of modules in design.md: every module listed, every listed one there ----------


def table_entries() -> list[str]:
    """The first column of design.md's `| module | owns |` table, one path per name.

    A cell names a module (`rules/identity`) or, ending in `/`, a whole package; names after
    the first take its folder (`rules/identity, ranking` is rules/identity and rules/ranking).
    """
    table = r"^\| module \| owns \|\n\|[-| :]+\|\n((?:\|.*\n)+)"
    rows = re.search(table, DESIGN.read_text(), re.MULTILINE)
    assert rows, "docs/design.md has no `| module | owns |` table"
    entries = []
    for row in rows.group(1).splitlines():
        folder = ""
        for name in row.split("|")[1].replace("`", "").split(","):
            name = name.strip()
            if "/" in name.rstrip("/"):
                folder = name[: name.rstrip("/").rfind("/") + 1]
                entries.append(name)
            else:
                entries.append(folder + name)
    return entries


def resolve(root: Path, entry: str) -> Path | None:
    """A listed name as a file or package folder: under src/vaelab first, else under src/."""
    for base in (root / APP, root):
        for candidate in (base / f"{entry.rstrip('/')}.py", base / entry.rstrip("/")):
            if candidate.exists():
                return candidate
    return None


def covered(path: Path, listed: list[Path], packages: list[Path]) -> bool:
    if path in listed or any(package in path.parents for package in packages):
        return True
    return path.name == "__init__.py" and path.parent in listed


def trivial(path: Path) -> bool:
    """A package's __init__ that holds nothing but its docstring: the folder, not a module."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body
    )


def unlisted(root: Path, entries: list[str]) -> tuple[list[str], list[str]]:
    """(modules the table does not list, with their docstring's first line; names it lists
    that do not exist)."""
    resolved = {entry: resolve(root, entry) for entry in entries}
    listed = [path for path in resolved.values() if path is not None]
    packages = [p for e, p in resolved.items() if p is not None and e.endswith("/")]
    missing = []
    for path in modules(root).values():
        if not trivial(path) and not covered(path, listed, packages):
            doc = (ast.get_docstring(ast.parse(path.read_text())) or "").split("\n")[0]
            missing.append(f"{path.relative_to(root).with_suffix('')}: {doc}")
    return sorted(missing), sorted(e for e, p in resolved.items() if p is None)


def test_design_md_lists_every_module_and_only_modules_that_exist():
    missing, gone = unlisted(ROOT, table_entries())
    assert not missing, "add to design.md's table of modules:\n" + "\n".join(missing)
    assert not gone, f"design.md's table lists modules that do not exist: {gone}"


# -- planted violations: the checks catch what they are for ----------------------------------

# Each case: files added to a copy of src/ (path -> text), and a line the checks must report
# in addition to what the tree already has; None: a permitted import, nothing new reported.
LAUNCHER = "hydra_plugins/vaelab_packed_launcher"
PLANTED = {
    "upward import": (
        {"vaelab/vocab/planted.py": "from vaelab.orchestration import train\n"},
        "vaelab.vocab.planted (vocab) imports vaelab.orchestration.train (orchestration)",
    ),
    "sideways import from edges": (
        {"vaelab/edges/planted.py": "from vaelab.engines.base import Job\n"},
        "vaelab.edges.planted (edges) imports vaelab.engines.base (engines)",
    ),
    "lazy upward import in a function": (
        {"vaelab/vae/planted.py": "def f():\n    from vaelab.rules import identity\n"},
        "vaelab.vae.planted (vae) imports vaelab.rules.identity (rules)",
    ),
    "relative upward import": (
        {"vaelab/engines/planted.py": "from ..orchestration import train\n"},
        "vaelab.engines.planted (engines) imports vaelab.orchestration.train (orchestration)",
    ),
    "relative upward import from a package's __init__": (
        {"vaelab/rules/planted/__init__.py": "from ...api import runs\n"},
        "vaelab.rules.planted (rules) imports vaelab.api (api)",
    ),
    "keras in a rules module": (
        {"vaelab/rules/planted.py": "import keras\n"},
        "vaelab.rules.planted (rules) imports keras",
    ),
    "jax in an edges module, lazily": (
        {"vaelab/edges/planted.py": "def f():\n    import jax.numpy as jnp\n"},
        "vaelab.edges.planted (edges) imports jax",
    ),
    "tensorflow in the model": (
        {"vaelab/vae/planted.py": "import tensorflow as tf\n"},
        "vaelab.vae.planted (vae) imports tensorflow",
    ),
    "keras in the model": ({"vaelab/vae/planted.py": "from keras import ops\n"}, None),
    "mlflow outside the store adapter": (
        {"vaelab/edges/planted.py": "from mlflow.tracking import MlflowClient\n"},
        "vaelab.edges.planted (edges) imports mlflow",
    ),
    "mlflow in the store adapter's package": (
        {"vaelab/edges/tracking/planted.py": "import mlflow\n"},
        None,
    ),
    "the config read by an engine": (
        {"vaelab/engines/planted.py": "from omegaconf import DictConfig\n"},
        "vaelab.engines.planted (engines) imports omegaconf",
    ),
    "a plugin imports the server": (
        {f"{LAUNCHER}/planted.py": "from vaelab_server import cli\n"},
        "hydra_plugins.vaelab_packed_launcher.planted (hydra_plugins) imports vaelab_server.cli "
        "(vaelab_server)",
    ),
    "a plugin imports jax": (
        {f"{LAUNCHER}/planted.py": "import jax\n"},
        "hydra_plugins.vaelab_packed_launcher.planted (hydra_plugins) imports jax",
    ),
    "a plugin other than the packed launcher selects the backend": (
        {
            "hydra_plugins/vaelab_optuna_sweeper/planted.py": (
                "import os\nos.environ['KERAS_BACKEND'] = 'jax'\n"
            )
        },
        f"hydra_plugins.vaelab_optuna_sweeper.planted (hydra_plugins) sets {SELECTS_BACKEND}",
    ),
    "orchestration selects the backend": (
        {
            "vaelab/orchestration/planted.py": (
                "import os\nos.environ.setdefault('KERAS_BACKEND', 'tensorflow')\n"
            )
        },
        f"vaelab.orchestration.planted (orchestration) sets {SELECTS_BACKEND}",
    ),
    "the server imports the rules": (
        {"vaelab_server/planted.py": "from vaelab.rules import identity\n"},
        "vaelab_server.planted (vaelab_server) imports vaelab.rules.identity (rules)",
    ),
    "a cycle, one side relative": (
        {
            "vaelab/vocab/planted_a.py": "from vaelab.vocab import planted_b\n",
            "vaelab/vocab/planted_b.py": "from . import planted_a\n",
        },
        "vaelab.vocab.planted_a -> vaelab.vocab.planted_b -> vaelab.vocab.planted_a",
    ),
    "a folder with no layer": (
        {"vaelab/planted/thing.py": "X = 1\n"},
        "vaelab.planted.thing: `planted` has no line in design.md's layers block",
    ),
    "a package beside vaelab with no layer": (
        {"planted_app/__init__.py": "X = 1\n"},
        "planted_app: `planted_app` has no line in design.md's layers block",
    ),
}


@pytest.fixture(scope="module")
def as_it_is() -> set[str]:
    return violations(ROOT)


def scratch_copy(tmp_path: Path, files: dict[str, str]) -> Path:
    """src/ copied (sources only) with the files added: the tree with one violation planted."""
    root = tmp_path / "src"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_violation_is_reported_and_a_permitted_import_is_not(case, tmp_path, as_it_is):
    files, expected = PLANTED[case]
    new = violations(scratch_copy(tmp_path, files)) - as_it_is
    assert new == ({expected} if expected else set())
