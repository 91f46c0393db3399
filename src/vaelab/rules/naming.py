"""What a run is called and what it carries: its name, params, tags and the texts a rerun reads.

Pure functions of the config and the environment, shared by the recorder (which writes them),
a sweep's early failures (a FAILED run still gets a readable name) and the rerun (which
compares environments).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from vaelab.edges import config as config_schema
from vaelab.edges import provenance
from vaelab.edges.config import Config
from vaelab.rules import identity
from vaelab.vocab import tags
from vaelab.vocab.choices import Binarize

# Model packages a logged model needs, when installed (the flavour pins the rest).
_MODEL_PACKAGES = ("keras", "tensorflow-cpu", "tensorflow", "jax")


def run_name(config: Config | DictConfig) -> str:
    """A name that says what the run is, readable in the MLflow UI's run list.

    E.g. `functional z=32 h=64 3ep elbo seed=1`. Takes the composed config too, so that a
    job whose config failed validation still gets a readable name for its FAILED run.
    """
    if config.tracking.run_name:
        return config.tracking.run_name
    m = config.model
    return (
        f"{config.style.name} z={m.latent_dim} h={m.intermediate_dim} {config.train.epochs}ep "
        f"{config.loss.name} seed={config.seed}"
    )


def model_name(config: Config) -> str:
    """The LoggedModel's name: the run's name in the characters MLflow allows in one."""
    return re.sub(r"[^A-Za-z0-9_=+-]+", "-", run_name(config)).strip("-")


def dataset_identity(config: Config, sha256: str) -> tuple[str, str]:
    """The (name, digest) MLflow knows the run's data by: its input and its model's metrics."""
    binarize = config.data.binarize
    return ("mnist" if binarize == Binarize.none else f"mnist-{binarize.value}", sha256[:16])


def run_params(config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's params (what it computes), and its locations as tags.

    Paths, the store and how a run is carried out differ between machines and relaunches of
    the same experiment; as params they would show in every compare view as differences.
    They stay on the run as tags (`config.paths.root`, ...) and in its config.yaml.
    """
    flat = config_schema.flatten(config)
    params = identity.identity(flat)
    prefix = tags.LOCATION_TAG_PREFIX
    return params, {f"{prefix}{k}": v for k, v in flat.items() if k not in params}


def environment_tags(data_sha256: str, backend: str) -> dict[str, str]:
    """What a run's numbers depend on besides its config; a rerun compares these."""
    return {
        tags.BACKEND: backend,
        tags.DATA_SHA256: data_sha256,
        **provenance.code_version(),
        **provenance.package_versions(),
        **provenance.platform_tags(),
    }


def run_tags(
    config: Config, environment: Mapping[str, str], overrides: Sequence[str], engine: str
) -> dict[str, str]:
    return {
        tags.STYLE: config.style.name.value,
        tags.LOSS: config.loss.name,
        tags.OVERRIDES: " ".join(overrides),
        tags.ENGINE: engine,
        tags.GIT_COMMIT: environment[tags.CODE_COMMIT],
        **environment,
    }


def input_texts(config: Config, overrides: Sequence[str]) -> dict[str, str]:
    """What a rerun needs: the resolved config, the overrides, the exact environment."""
    return {
        "config.yaml": config_schema.to_yaml(config),
        "overrides.yaml": "".join(f"- {o}\n" for o in overrides) or "[]\n",
        "requirements.txt": provenance.installed_requirements(),
    }


def model_requirements() -> list[str]:
    """The pinned packages a logged model declares, as pip reads them."""
    versions = provenance.package_versions(_MODEL_PACKAGES)
    return [f"{name.removeprefix(tags.VERSION_PREFIX)}=={v}" for name, v in versions.items()]
