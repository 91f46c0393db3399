"""Configurations and their replicates: the statistics every comparison rests on. Pure pandas.

A *configuration* is what a run computes, without its seed; the runs of one configuration are
its *replicates*. Seed noise on MNIST is as large as the effects a sweep ranks (docs/
benchmarks.md), so a configuration is judged by the mean of its replicates, with a 95%
interval for that mean, and a configuration is *indistinguishable from the best* when the data
cannot say it is worse. These functions take a `ranking.rank` frame (one row per run, with
`group`, `status` and `collapsed`) and return one row per configuration; the sweep summary,
the report and `vaelab.configs` all call them, so they cannot disagree.

**The interval** is Student's t interval on the mean: mean ± t(0.975, n-1) · sd / √n. It is
exact for normally distributed replicates at any n, where a percentile bootstrap of 3 values
covers the mean far less often than it claims (tests/test_replicates.py measures both).

**Indistinguishable from the best**: Welch's one-sided t-test of "this configuration's mean is
larger (worse) than the best's" does not reject at the 5% level. Said otherwise: the
probability of improvement is not established at 95%. With a single replicate on either side
there is no spread to test against, and the mark is left empty ("1 seed: no interval").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from vaelab.edges.config import Config, as_dict
from vaelab.rules import identity, ranking
from vaelab.vocab.errors import ConfigError

# What makes a replicate rather than a configuration: the seed (weights, noise, batch order).
REPLICATE_KEYS = ("seed",)
# The setting that asks a sweep for K replicates of every configuration (conf/config.yaml).
SEEDS_KEY = "sweep.seeds"
MULTIRUN_FLAGS = ("--multirun", "-m")
CONFIDENCE = 0.95
# The level of the one-sided test behind "indistinguishable from the best".
SIGNIFICANCE = 0.05
INTERVAL_RULE = (
    f"{CONFIDENCE:.0%} interval: Student's t on the mean of the replicates (mean ± t·sd/√n)"
)
INDISTINGUISHABLE_RULE = (
    "≈ best: Welch's one-sided t-test cannot say, at the 5% level, that its mean is worse "
    "than the best configuration's"
)
NO_INTERVAL = "1 seed: no interval"
# The per-configuration columns, in the order a table shows them.
COLUMNS = (
    "group",
    "configuration",
    "rank",
    "n",
    "mean",
    "sd",
    "se",
    "ci_low",
    "ci_high",
    "indistinguishable",
    "replicates",
    "run_ids",
)


def configuration_of(config: Config) -> str:
    """A short key of what a config computes without its seed: equal for its replicates."""
    what = identity.identity(as_dict(config))
    text = repr(sorted((k, repr(v)) for k, v in what.items() if k not in REPLICATE_KEYS))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def configuration_params(frame: pd.DataFrame) -> list[str]:
    """The `params.*` columns that define a configuration: not a seed, not a location."""
    return [
        name
        for name in frame.columns
        if name.startswith("params.")
        and name.removeprefix("params.") not in REPLICATE_KEYS
        and not identity.is_location(name.removeprefix("params."))
    ]


def configuration_keys(frame: pd.DataFrame) -> pd.Series:
    """A short stable key per run naming its configuration (equal for its replicates)."""
    names = configuration_params(frame)

    def key(row: pd.Series) -> str:
        text = "\n".join(f"{n}={'' if pd.isna(row[n]) else row[n]}" for n in names)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    return frame.apply(key, axis=1)


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval for the mean of `values`; NaNs for fewer than two values."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    from scipy import stats  # ~0.3 s: paid by a table with replicates, not by every report

    mean = float(np.mean(values))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def worse_than(
    mean: float, se: float, n: int, best_mean: float, best_se: float, best_n: int
) -> bool | None:
    """Whether a configuration is worse (larger) than the best, by Welch's one-sided t-test.

    None when either side has a single replicate: there is no spread to judge against.
    """
    if n < 2 or best_n < 2:
        return None
    from scipy import stats  # see `interval`

    spread = math.hypot(se, best_se)
    if spread == 0:
        return mean > best_mean
    t = (mean - best_mean) / spread
    df = spread**4 / (se**4 / (n - 1) + best_se**4 / (best_n - 1))
    return bool(stats.t.sf(t, df) < SIGNIFICANCE)


def summarise(ranked: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per configuration and comparable group, ranked by the mean of `by`.

    `ranked` is a `ranking.rank` frame. `n` counts the replicates that finished with a value;
    `replicates` says what became of every one ("3 finished, 1 pruned, 1 failed"). A
    configuration with a collapsed replicate, or none finished, is listed but never ranked.
    """
    if ranked.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    frame = ranked.assign(configuration=configuration_keys(ranked))
    value = pd.to_numeric(frame.get(f"metrics.{by}"), errors="coerce")
    frame = frame.assign(_value=value)
    rows = [
        _configuration_row(group, key, runs)
        for (group, key), runs in frame.groupby(["group", "configuration"], sort=False)
    ]
    table = pd.DataFrame(rows)
    return _rank_within_groups(table)


def _configuration_row(group: str, key: str, runs: pd.DataFrame) -> dict[str, object]:
    finished = runs[runs["status"].eq("FINISHED") & runs["_value"].notna()]
    collapsed = int(finished["collapsed"].sum()) if "collapsed" in finished else 0
    values = finished["_value"].to_numpy(dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    se = sd / math.sqrt(n) if n > 1 else math.nan
    low, high = interval(values)
    params = {
        name.removeprefix("params."): runs[name].iloc[0]
        for name in configuration_params(runs)
        if runs[name].nunique(dropna=False) == 1
    }
    return {
        "group": group,
        "configuration": key,
        "n": n,
        "mean": mean,
        "sd": sd,
        "se": se,
        "ci_low": low,
        "ci_high": high,
        "collapsed_replicates": collapsed,
        "replicates": describe_replicates(runs["status"], collapsed),
        "run_ids": list(runs["run_id"]),
        "_rankable": n > 0 and collapsed == 0,
        **{f"params.{k}": v for k, v in params.items()},
    }


def describe_replicates(statuses: Iterable[str], collapsed: int = 0) -> str:
    """What became of a configuration's replicates, e.g. "3 finished, 1 pruned, 1 failed"."""
    counts = pd.Series(list(statuses), dtype=object).value_counts()
    parts = [f"{counts[s]} {s.lower()}" for s in _STATUS_ORDER if s in counts]
    parts += [f"{c} {s.lower()}" for s, c in counts.items() if s not in _STATUS_ORDER]
    if collapsed:
        parts.append(f"{collapsed} collapsed")
    return ", ".join(parts)


_STATUS_ORDER = ("FINISHED", "PRUNED", "RUNNING", "STALE", "FAILED", "KILLED")


def _rank_within_groups(table: pd.DataFrame) -> pd.DataFrame:
    """Rank each group's configurations by mean; mark the ones the best cannot be told from."""
    table = table.assign(_sort=table["mean"].where(table["_rankable"]))
    table = table.sort_values(["group", "_sort", "configuration"], na_position="last")
    table["rank"] = table.groupby("group").cumcount() + 1
    table["rank"] = table["rank"].where(table["_rankable"]).astype("Int64")
    table["indistinguishable"] = pd.Series(pd.NA, index=table.index, dtype="boolean")
    for _, rows in table[table["_rankable"]].groupby("group"):
        best = rows.iloc[0]
        for index, row in rows.iterrows():
            if index == best.name:
                table.loc[index, "indistinguishable"] = True
                continue
            worse = worse_than(
                row["mean"], row["se"], row["n"], best["mean"], best["se"], best["n"]
            )
            if worse is not None:
                table.loc[index, "indistinguishable"] = not worse
    extra = [c for c in table.columns if c not in COLUMNS and not c.startswith("_")]
    return table[[*COLUMNS, *extra]].reset_index(drop=True)


def interval_text(row: pd.Series, digits: int = 2) -> str:
    """The mean and its interval as a reader sees it: "167.70 ± 2.17 (n=3)"."""
    if row["n"] == 0:
        return "no finished replicate"
    if row["n"] < 2:
        return f"{row['mean']:.{digits}f} ({NO_INTERVAL})"
    half = (row["ci_high"] - row["ci_low"]) / 2
    return f"{row['mean']:.{digits}f} ± {half:.{digits}f} (n={row['n']})"


def with_seed_axis(arguments: Sequence[str]) -> list[str]:
    """A command line with `sweep.seeds=K` turned into the sweep axis `seed=1,...,K`.

    Every sweeper and launcher then sees replicates as what they are, jobs that differ only
    in their seed, and the sweep's id names them. `sweep.seeds=K` stays on the line (it is
    recorded, and a HOW key: never part of a run's identity). Refused in one line: a K that
    is not a whole number >= 1, K > 1 without --multirun, and K > 1 beside a `seed=` override.
    """
    arguments = list(arguments)
    given = [a for a in arguments if identity.override_key(a) == SEEDS_KEY]
    if not given:
        return arguments
    text = given[-1].split("=", 1)[1].strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"{SEEDS_KEY}={text} is invalid: expected a whole number >= 1 (replicates per "
            "configuration, seeds 1..K)"
        )
    seeds = int(text)
    if seeds == 1:
        return arguments
    if not any(a in MULTIRUN_FLAGS for a in arguments):
        raise ConfigError(
            f"{SEEDS_KEY}={seeds} trains replicates, which is a sweep: add --multirun, or give "
            "one run its seed with seed=N"
        )
    if any(identity.override_key(a) in REPLICATE_KEYS for a in arguments):
        raise ConfigError(
            f"{SEEDS_KEY}={seeds} and a seed= override both choose seeds: keep one (sweep.seeds=K "
            "means seed=1,...,K)"
        )
    return [*arguments, "seed=" + ",".join(str(s) for s in range(1, seeds + 1))]


def has_replicates(ranked: pd.DataFrame) -> bool:
    """Whether some configuration ran with more than one seed (then it is judged by its mean)."""
    return bool(len(ranked)) and bool(configuration_keys(ranked).duplicated().any())


def best_runs(ranked: pd.DataFrame, by: str) -> pd.DataFrame:
    """The run that stands for each comparable group's best: one rule for summary and report.

    Without replicates, the best run (`ranking.best`). With them, the best configuration is
    the one with the lowest mean, and its own best replicate stands for it (its model is the
    one registered): never the luckiest seed of another configuration.
    """
    if not has_replicates(ranked):
        return ranking.best(ranked)
    table = summarise(ranked, by)
    chosen = []
    value = pd.to_numeric(ranked.get(f"metrics.{by}"), errors="coerce")
    for _, row in table[table["rank"].eq(1)].iterrows():
        runs = ranked[ranked["run_id"].isin(row["run_ids"]) & ranked["rank"].notna()]
        if len(runs):
            chosen.append(value[runs.index].idxmin())
    return ranked.loc[chosen]
