"""Which hyperparameters matter: Optuna's fANOVA on a group's finished configurations.

Any sweep's configurations (a grid's as well as a search's) become the trials of an in-memory
Optuna study, each with its settings and the mean objective over its seeds, and Optuna's
fANOVA evaluator (a random forest's functional ANOVA, Hutter et al. 2014) says how much of
the variance of that mean each hyperparameter's main effect explains, normalised to sum 1.

Below MIN_CONFIGURATIONS configurations, or with fewer than MIN_HYPERPARAMETERS varying, no
number is given and one sentence says why: a forest fitted on a handful of points splits on
noise, and a single hyperparameter explains everything by definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

# A 2 x 2 x 2 grid is the smallest design where each main effect rests on 4 points per level.
MIN_CONFIGURATIONS = 8
MIN_HYPERPARAMETERS = 2
# The forest's seed: the same configurations give the same numbers in every report.
SEED = 0
METHOD = (
    f"fANOVA (Optuna's FanovaImportanceEvaluator, seed {SEED}) on the configurations' mean "
    "objective: the share of its variance each hyperparameter's main effect explains, "
    "normalised to sum 1"
)


def too_few(configurations: int, varying: Sequence[str]) -> str | None:
    """Why no importance is estimated for these configurations; None when it is."""
    if configurations >= MIN_CONFIGURATIONS and len(varying) >= MIN_HYPERPARAMETERS:
        return None
    vary = f"{len(varying)} hyperparameter{'s' if len(varying) != 1 else ''} vary"
    if len(varying) == 1:
        vary = "1 hyperparameter varies"
    return (
        f"too few configurations to estimate it: {configurations} finished and {vary}; "
        f"fANOVA needs at least {MIN_CONFIGURATIONS} configurations and "
        f"{MIN_HYPERPARAMETERS} varying hyperparameters"
    )


def _distribution(values: pd.Series):
    """Optuna's distribution for a column of settings: integers, floats or categories."""
    from optuna import distributions

    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        if (numbers == numbers.round()).all():
            return distributions.IntDistribution(int(numbers.min()), int(numbers.max()))
        return distributions.FloatDistribution(float(numbers.min()), float(numbers.max()))
    return distributions.CategoricalDistribution(sorted(values.astype(str).unique()))


def _value(distribution, text: object) -> object:
    from optuna import distributions

    if isinstance(distribution, distributions.IntDistribution):
        return int(float(text))
    if isinstance(distribution, distributions.FloatDistribution):
        return float(text)
    return str(text)


def importances(configs: pd.DataFrame, params: Sequence[str]) -> dict[str, float]:
    """Each hyperparameter's fANOVA importance for the configurations' mean, largest first.

    `configs`: ranked rows of `replicates.summarise` (one per configuration, `mean` and a
    `params.<name>` column per hyperparameter in `params`). Call only when `too_few` is None.
    """
    import optuna  # ~1.5 s with scikit-learn: paid by the reports that estimate importance
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    columns = {p: _distribution(configs[f"params.{p}"]) for p in params}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per in-memory study
    try:
        study = optuna.create_study(direction="minimize")
        for _, row in configs.iterrows():
            study.add_trial(
                optuna.trial.create_trial(
                    params={p: _value(d, row[f"params.{p}"]) for p, d in columns.items()},
                    distributions=columns,
                    value=float(row["mean"]),
                )
            )
        found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=SEED))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {name: float(share) for name, share in sorted(found.items(), key=lambda i: -i[1])}
