"""A finished run's numbers: quality beyond the loss, and which of them are logged when.

Plain numpy over what an engine measured (`engines.base.Outcome`), named by `vocab.metrics`.
It lives in `rules`, not with the evaluation, because the config decides what is measured
(the active-unit threshold, the loss's kind, whether an importance-weighted bound applies)
and engines never read the config; `vocab` holds names only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vaelab.edges import config as config_schema
from vaelab.edges.config import Config
from vaelab.vocab import metrics


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
    """Whether the run measures an importance-weighted bound: asked for, and its loss has one."""
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


def model_metrics_of_epochs(final: Mapping[str, float]) -> dict[str, float]:
    """The last epoch's validation numbers, which the run's LoggedModel carries as well.

    A sweep ranks by them (its objective is one): without them the Models view could not
    sort the models as the sweep did.
    """
    _, validation = metrics.EPOCH_SPLITS
    names = {metrics.name(validation, term) for term in metrics.TERMS}
    return {name: value for name, value in final.items() if name in names}
