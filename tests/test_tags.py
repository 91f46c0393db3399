"""Every tag name is spelled once, in `vocab.tags`: a second spelling drifts from the first.

Reads every string literal of every module under src/ (f-strings' fixed parts included) and
fails on one that spells a tag name of `vocab.tags` anywhere else. Names that are also a
config key (`data.sha256`) or an everyday word (`loss`, `engine`) are left out: there a
literal is the key or the word, not the tag.
"""

from __future__ import annotations

import ast

from tests.conftest import REPO
from vaelab.edges.config import as_dict, default_config
from vaelab.vocab import tags

SRC = REPO / "src"


def distinctive_tag_names() -> set[str]:
    names = {v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str)}
    config_keys = set(_keys(as_dict(default_config())))
    return {n for n in names if ("." in n or "_" in n) and n not in config_keys}


def _keys(tree: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a nested config, sections included."""
    found = []
    for key, value in tree.items():
        found.append(f"{prefix}{key}")
        if isinstance(value, dict):
            found += _keys(value, f"{prefix}{key}.")
    return found


def test_the_distinctive_names_include_a_sweeps_and_a_groups():
    assert {"sweep.id", "sweep.best_overrides", "pack.size", "config_hash"} <= (
        distinctive_tag_names()
    )


def test_no_module_spells_a_tag_name_of_its_own():
    names, home = distinctive_tag_names(), SRC / "vaelab" / "vocab" / "tags.py"
    spelled = [
        f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}"
        for path in sorted(SRC.rglob("*.py"))
        if path != home
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]
    assert not spelled, "import the name from vaelab.vocab.tags instead: " + ", ".join(spelled)
