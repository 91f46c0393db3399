"""What a config mistake says: one line naming the key, what it accepts and the likely fix.

Hydra reports a typo'd key, a wrong type or an unknown preset in 6 to 12 lines, and for a
typo advises `+key=value`, which would smuggle the typo in. `config_error` turns each of
Hydra's composition errors into a `ConfigError` whose message names the key, the value given,
what it accepts, and the closest real name ("did you mean"); the command line
(`edges.cli`) and the Python interface (`vaelab.compose`) both raise or print that message.
`check_home` does the same for a `VAELAB_HOME` nothing can be written to.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import (
    BooleanNode,
    DictConfig,
    EnumNode,
    FloatNode,
    IntegerNode,
    ListConfig,
    OmegaConf,
    StringNode,
)
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from vaelab.vocab.errors import ConfigError

# The variable that moves everything vaelab writes (conf/paths/default.yaml reads it).
HOME_ENV = "VAELAB_HOME"
# Presets that the schemas register in Hydra's ConfigStore: listed by Hydra, chosen by no one.
_SCHEMA_SUFFIX = "_schema"


def config_error(error: BaseException, config_name: str) -> ConfigError | None:
    """The one-line ConfigError for a Hydra composition error; None for any other error.

    `config_name`: the config being composed (`config`, `rerun`, `report`), whose keys and
    groups the "did you mean" is drawn from.
    """
    if isinstance(error, OverrideParseException):
        return ConfigError(
            f"cannot read the override {error.override!r}: {_first_line(error.message)} "
            "(Hydra's override grammar: key=value, quoting a value that has spaces or commas)"
        )
    if isinstance(error, MissingConfigException) and error.options is not None:
        return _unknown_preset(error.missing_cfg_file or "", error.options)
    if not isinstance(error, ConfigCompositionException):
        return None
    cause = error.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key:
        return ConfigError(unknown_key(cause.full_key, setting_names(config_name)))
    if isinstance(cause, ValidationError) and cause.full_key:
        return _wrong_value(cause)
    why = f": {_first_line(str(cause))}" if cause is not None else ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return ConfigError("; ".join(lines) + why)


def unknown_key(key: str, known: list[str]) -> str:
    """The message for a key the config does not have, with the closest one it does."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return (
        f"{key} is not a vaelab setting.{hint} Remove it or fix its name "
        "(`--help` lists every key and preset)."
    )


def invalid_value(key: str, value: object, expected: str, hint: str = "") -> str:
    """The message for a value of the wrong type or out of range (`hint`: did you mean)."""
    return (
        f"{key}={value!r} is invalid: expected {expected}.{hint} "
        f"Fix it on the command line (e.g. `{key}=<value>`) or in conf/."
    )


def setting_names(config_name: str) -> list[str]:
    """Every dotted key of the composed config (sections too) and every preset group.

    Composed without overrides (the user's are what failed); empty where Hydra is not set
    up or the config itself does not compose: the message then has no suggestion.
    """
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return []
    try:
        composed = compose(config_name=config_name, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - only a suggestion is lost
        return []
    groups = [
        group
        for group in OmegaConf.to_container(composed.hydra.runtime.choices)
        if _SCHEMA_SUFFIX not in group
    ]
    return groups + list(_paths(composed))


def _paths(node: DictConfig, prefix: str = ""):
    for key in node:
        path = f"{prefix}{key}"
        yield path
        child = node._get_node(key)  # noqa: SLF001 - the node, interpolations unresolved
        if isinstance(child, DictConfig) and not child._is_none():  # noqa: SLF001
            yield from _paths(child, f"{path}.")


def _unknown_preset(missing: str, options: list[str]) -> ConfigError:
    group, _, option = missing.rpartition("/")
    options = [o for o in options if not o.endswith(_SCHEMA_SUFFIX)]
    close = difflib.get_close_matches(option, options, n=1)
    hint = f" Did you mean {group}={close[0]}?" if close else ""
    return ConfigError(
        f"{group}={option} is not a preset of {group}.{hint} "
        f"The choices: {', '.join(sorted(options))}."
    )


def _wrong_value(cause: ValidationError) -> ConfigError:
    """A value of the wrong type, or not one of an enum's names."""
    node = cause.child_node
    key, value = cause.full_key, cause.value
    if isinstance(node, EnumNode):
        names = [member.name for member in node.enum_type]
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f" Did you mean {key}={close[0]}?" if close else ""
        return ConfigError(invalid_value(key, value, f"one of {', '.join(names)}", hint))
    expected = _TYPE_NAMES.get(type(node), "a value of another type")
    if getattr(node, "_is_optional", lambda: False)():
        expected = f"null or {expected}"
    return ConfigError(invalid_value(key, value, expected))


_TYPE_NAMES = {
    IntegerNode: "an integer",
    FloatNode: "a number",
    BooleanNode: "true or false",
    StringNode: "a string",
    DictConfig: "a mapping (key: value, ...)",
    ListConfig: "a list ([a,b])",
}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def check_home(environ: dict[str, str] | None = None) -> None:
    """Refuse a VAELAB_HOME that is not a directory vaelab can write in, before it is used.

    Left to the first write, it surfaces as a traceback from deep in Hydra or MLflow. A home
    that does not exist yet is fine when the directory that would hold it is writable.
    """
    value = (os.environ if environ is None else environ).get(HOME_ENV)
    if not value:
        return
    path = Path(value).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    fix = f"point {HOME_ENV} at a directory you can write in, or unset it to use the checkout"
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise ConfigError(f"{HOME_ENV}={value} is not a directory{where}: {fix}.")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise ConfigError(
            f"{HOME_ENV}={value} is not writable ({error.strerror} in {existing}): {fix}."
        ) from None
