"""The metric vocabulary: every name a run logs, what it means, and in which units.

One owner for the names, so that training, plots, the report, reruns and config validation
cannot drift apart. Plain Python: importing it costs nothing (no Keras, no MLflow).

What `total` *is* depends on the loss and the data, and the names and labels say so:
- binarised digits (`data.binarize` dynamic or static) with the Bernoulli ELBO (`elbo`: BCE
  and KL both summed, beta 1): `total` is a negative ELBO, an upper bound on -log p(x) in nats
  per image, and the importance-weighted estimate is a tighter one (`test/nll_bound_*`);
- continuous intensities with the same loss: the same formulas, but BCE against fractional
  pixels is not a likelihood (it has a floor of ~45 nats that no model beats), so nothing is
  called `nll` (`test/iw_bce`);
- the notebook presets (MSE averaged over pixels): a training loss in mixed units.
"""

from __future__ import annotations

from collections.abc import Mapping

from vaelab.vocab.choices import Binarize, Reconstruction, Reduction

# Binarised digits: where the Bernoulli ELBO bounds -log p(x).
_BINARY = (Binarize.dynamic, Binarize.static)

# The loss terms every style reports: total = reconstruction + beta * kl.
TERMS = ("total", "reconstruction", "kl")
# Logged every epoch (step = epoch)...
EPOCH_SPLITS = ("train", "val")
# ...and once, at the end of the run.
FINAL_SPLIT = "test"
SPLITS = (*EPOCH_SPLITS, FINAL_SPLIT)


def name(split: str, term: str) -> str:
    return f"{split}/{term}"


EPOCH_METRICS = tuple(name(split, term) for split in EPOCH_SPLITS for term in TERMS)
TEST_METRICS = tuple(name(FINAL_SPLIT, term) for term in TERMS)
TEST_TOTAL, TEST_RECONSTRUCTION, TEST_KL = TEST_METRICS
# A solo run's own epoch: its wall time, validation included.
EPOCH_SECONDS = "time/epoch_seconds"
# A packed run shares each epoch with its group: the group's epoch wall time (every member
# trained at once), and that time over the models it trained. Neither is a solo epoch time.
GROUP_EPOCH_SECONDS = "time/group_epoch_seconds"
EPOCH_SECONDS_PER_MODEL = "time/epoch_seconds_per_model"

# Quality beyond the loss, measured at the end of each run on the run's test digits.
# Active latent units (Burda et al. 2015: the variance of a unit's posterior mean over digits
# exceeds `eval.active_unit_threshold`): on validation digits, what a sweep may choose by (is
# the posterior collapsed?); on test digits, reported only.
VAL_ACTIVE_UNITS = "val/active_units"
ACTIVE_UNITS = "test/active_units"
NLL_BOUND_ELBO = "test/nll_bound_elbo"  # binarised data, Bernoulli ELBO: = test/total
NLL_BOUND_IW = "test/nll_bound_iw"  # binarised data: importance-weighted, tighter
IW_BCE = "test/iw_bce"  # continuous intensities: the same estimator, not a likelihood
TEST_DIGITS = "test/digits"  # how many test digits every test/ number above averages over
QUALITY_METRICS = (VAL_ACTIVE_UNITS, ACTIVE_UNITS, NLL_BOUND_ELBO, NLL_BOUND_IW, IW_BCE)

# What a sweep may rank by and a sweeper minimise: validation metrics that measure fit.
OBJECTIVES = (name("val", "total"), name("val", "reconstruction"))

# What `total` measures (see the module docstring).
LIKELIHOOD = "likelihood"
CONTINUOUS_ELBO = "continuous"
OTHER_LOSS = "other"


def check_objective(metric: str) -> None:
    """Refuse an objective that would tune on the test set or reward a collapsed posterior."""
    if metric in OBJECTIVES:
        return
    split, _, term = metric.partition("/")
    if split == FINAL_SPLIT:
        why = "tuning on the test set makes its numbers meaningless"
    elif term == "kl":
        why = "minimising the KL rewards a collapsed posterior"
    else:
        why = "it is not a validation metric of the fit"
    raise ValueError(f"{why}; use one of {', '.join(OBJECTIVES)}")


def loss_kind(params: Mapping[str, object]) -> str:
    """What a run's `total` is, from its params (flattened config, values as logged)."""

    def value(key: str) -> str:
        return str(params.get(key, "")).lower()

    bernoulli_elbo = (
        value("loss.reconstruction") == Reconstruction.bce
        and value("loss.pixel_reduction") == Reduction.sum
        and value("loss.kl_reduction") == Reduction.sum
        and value("loss.beta") in ("1", "1.0")
    )
    if not bernoulli_elbo:
        return OTHER_LOSS
    binary = value("data.binarize") in _BINARY
    return LIKELIHOOD if binary else CONTINUOUS_ELBO


def iw_metric(params: Mapping[str, object]) -> str | None:
    """Under which name a run logs its importance-weighted estimate; None: not estimated.

    It needs a Bernoulli decoder scored over all pixels (BCE, summed); it bounds -log p(x)
    only when the pixels are binary.
    """
    if str(params.get("loss.reconstruction")) != Reconstruction.bce:
        return None
    if str(params.get("loss.pixel_reduction")) != Reduction.sum:
        return None
    binary = str(params.get("data.binarize", Binarize.none)) in _BINARY
    return NLL_BOUND_IW if binary else IW_BCE


_TERM_LABEL = {
    LIKELIHOOD: {
        "total": "−ELBO ≥ −log p(x)",
        "reconstruction": "−E log p(x|z)",
        "kl": "KL",
    },
    CONTINUOUS_ELBO: {
        "total": "−ELBO on intensities",
        "reconstruction": "BCE on intensities",
        "kl": "KL",
    },
    OTHER_LOSS: {"total": "loss", "reconstruction": "reconstruction", "kl": "KL"},
}
_UNIT = {LIKELIHOOD: "nats", CONTINUOUS_ELBO: "nats", OTHER_LOSS: "loss units"}


def label(metric: str, kind: str = OTHER_LOSS) -> str:
    """A column header or axis label that says what the number is and its unit."""
    fixed = {
        VAL_ACTIVE_UNITS: "active units (validation)",
        ACTIVE_UNITS: "active units (test)",
        NLL_BOUND_ELBO: "test −ELBO ≥ −log p(x) (nats)",
        NLL_BOUND_IW: "test IW bound ≥ −log p(x) (nats)",
        IW_BCE: "test IW BCE on intensities (nats, not a likelihood)",
        TEST_DIGITS: "test digits",
        EPOCH_SECONDS: "epoch time (s)",
        GROUP_EPOCH_SECONDS: "packed group's epoch time (s)",
        EPOCH_SECONDS_PER_MODEL: "packed group's epoch time per model (s)",
    }
    if metric in fixed:
        return fixed[metric]
    split, _, term = metric.partition("/")
    if term in TERMS:
        unit = "nats" if term == "kl" else _UNIT[kind]
        return f"{split} {_TERM_LABEL[kind][term]} ({unit})"
    return metric


def describe(kind: str) -> str:
    """One sentence for a report header: what the loss numbers of this kind are."""
    return {
        LIKELIHOOD: (
            "Binarised digits, Bernoulli decoder: total is the negative ELBO, an upper bound "
            "on −log p(x) in nats per image; the importance-weighted bound is tighter. These "
            "compare with published likelihoods on binarised MNIST."
        ),
        CONTINUOUS_ELBO: (
            "Continuous pixel intensities scored with binary cross-entropy: total has the form "
            "of a negative ELBO in nats per image, but it is not a likelihood (BCE against "
            "fractional pixels has a floor of about 45 nats that no model can beat); compare "
            "it only with runs on the same data."
        ),
        OTHER_LOSS: (
            "A training loss, not a likelihood (e.g. the notebook's MSE averaged over pixels "
            "plus a KL): compare it only with runs of the same loss."
        ),
    }[kind]
