"""What the swept hyperparameters do, beyond a ranking. Pure pandas, tested on hand-made frames.

Takes `ranking.rank` frames (one row per run) and `replicates.summarise` tables (one row per
configuration); every mean and interval comes from `replicates`, so a figure and a table of
the same configurations cannot disagree.

- **A hyperparameter that changes no number.** The three styles build the same model and are
  bit-identical by design, so a sweep over `style` trains each configuration three times.
  Such a hyperparameter is said once and its runs are shown once (`no_effect`, `collapse`):
  counting them as three configurations would rank three ties and average the same number
  three times into an interval.
- **Effects**: the mean objective at each value of one hyperparameter, with its interval.
- **The rate–distortion plane**: the configurations no other beats on both KL and
  reconstruction (`pareto_front`).
- **The best epoch** of a run's objective, where it is not the last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vaelab.rules import ranking, replicates

# "Changes no number" compares every validation and test number of the runs...
COMPARED_SPLITS = ("val/", "test/")
# ...to this relative tolerance: runs recorded by different processes (a relaunch, a packed
# group beside a solo run) may differ in the last bit, which no table shows.
SAME_RTOL = 1e-9


def hyperparameters(frame: pd.DataFrame) -> list[str]:
    """The params that vary between a group's runs and define configurations (no seed)."""
    return [
        column.removeprefix("params.")
        for column in replicates.configuration_params(frame)
        if column.removeprefix("params.") not in ranking.COMPARABILITY
        and frame[column].dropna().astype(str).nunique() > 1
    ]


@dataclass(frozen=True)
class NoEffect:
    """A hyperparameter whose values give the same numbers wherever they were compared."""

    param: str
    values: tuple[str, ...]
    configurations: int  # configurations (without it) that ran more than one of its values

    def sentence(self, by: str, group: str = "") -> str:
        """What the summary and the report say of it; `group` names its comparable group."""
        name = self.param.removesuffix(".name").rsplit(".", 1)[-1]
        every = "the" if self.configurations == 1 else "all"
        return (
            f"{name} changes no number: its {len(self.values)} values "
            f"({', '.join(self.values)}) give identical {by} (and every other val/ and test/ "
            f"number) in {every} {self.configurations} configuration"
            f"{'s' if self.configurations != 1 else ''} that ran more than one of them; each "
            f"configuration is ranked once, not as {len(self.values)} ties"
            f"{f' ({group})' if group else ''}."
        )


def _finished(frame: pd.DataFrame, by: str) -> pd.Series:
    return frame["status"].eq("FINISHED") & ranking.metric(frame, by).notna()


def _numbers(frame: pd.DataFrame, by: str) -> list[str]:
    names = [c for c in frame if c.startswith("metrics.") and c[8:].startswith(COMPARED_SPLITS)]
    return sorted({f"metrics.{by}", *names} & set(frame.columns))


def _keys(frame: pd.DataFrame, param: str, seeds: bool = True) -> pd.Series:
    """Runs that differ only in `param` share a key; with `seeds`, their seed as well."""
    columns = [c for c in replicates.configuration_params(frame) if c != f"params.{param}"]
    if seeds:
        columns += [f"params.{k}" for k in replicates.REPLICATE_KEYS if f"params.{k}" in frame]
    if not columns:
        return pd.Series("", index=frame.index, dtype=object)
    text = frame[columns].astype(object).where(frame[columns].notna(), "").astype(str)
    return text.agg("\n".join, axis=1)


def _identical(rows: pd.DataFrame, numbers: Sequence[str]) -> bool:
    values = rows[list(numbers)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return bool(np.isclose(values, values[0], rtol=SAME_RTOL, atol=0.0, equal_nan=True).all())


def no_effect(frame: pd.DataFrame, param: str, by: str) -> NoEffect | None:
    """`param` as a NoEffect when it changes no number of a group's finished runs; else None.

    Runs that differ only in it (same other settings, same seed) must have identical numbers,
    and at least one configuration must have run two of its values: a hyperparameter never
    compared on the same configuration (a random search) is not said to do nothing.
    """
    finished = frame[_finished(frame, by)]
    if finished.empty:
        return None
    keys, values = _keys(finished, param), finished[f"params.{param}"].astype(str)
    numbers = _numbers(finished, by)
    if not all(_identical(rows, numbers) for _, rows in finished.groupby(keys, sort=False)):
        return None
    distinct = values.groupby(keys).transform("nunique")
    compared = _keys(finished, param, seeds=False)[distinct > 1].nunique()
    if not compared:
        return None
    return NoEffect(param, tuple(sorted(set(values))), int(compared))


@dataclass
class Collapsed:
    """A group's runs with the hyperparameters that change no number folded away."""

    runs: pd.DataFrame
    found: list[NoEffect]
    stands_for: dict[str, list[str]]  # a kept run's id -> the ids of the runs folded into it

    def notes(self) -> dict[str, str]:
        """Per run id, what the per-run table says in place of a tie."""
        if not self.found:
            return {}
        why = " and ".join(e.param.removesuffix(".name").rsplit(".", 1)[-1] for e in self.found)
        said = {}
        for kept, folded in self.stands_for.items():
            said[kept] = f"stands for {', '.join(r[:8] for r in folded)} ({why} changes no number)"
            for run_id in folded:
                said[run_id] = f"same numbers as {kept[:8]} ({why} changes no number)"
        return said


def collapse(frame: pd.DataFrame, by: str) -> Collapsed:
    """The runs with each hyperparameter that changes no number folded away.

    For each such hyperparameter (found one at a time, the frame folded after each), the runs
    that differ only in it become one: the first finished one in the frame's (ranking) order
    stands for the other finished ones, which leave the frame (runs that did not finish stay),
    and the hyperparameter's column goes with them (what is left of a configuration no longer
    names it).
    """
    found: list[NoEffect] = []
    stands_for: dict[str, list[str]] = {}
    for param in hyperparameters(frame):
        effect = no_effect(frame, param, by)
        if effect is None:
            continue
        found.append(effect)
        keys, finished = _keys(frame, param), _finished(frame, by)
        rank = (~finished).astype(int)  # finished first, then the frame's order
        kept = set(rank.groupby(keys, sort=False).idxmin())
        for _, rows in frame.groupby(keys, sort=False):
            (stays,) = [i for i in rows.index if i in kept]
            # Only finished runs have the numbers that were found identical: a failed, pruned
            # or running one stays a row of its own, visible as what it is.
            kept.update(i for i in rows.index if i != stays and not finished[i])
            gone = [frame.loc[i, "run_id"] for i in rows.index if i not in kept]
            if gone:
                ids = [r for g in gone for r in [g, *stands_for.pop(g, [])]]
                stands_for.setdefault(frame.loc[stays, "run_id"], []).extend(ids)
        frame = frame.loc[frame.index.isin(kept)].drop(columns=f"params.{param}")
    return Collapsed(frame, found, stands_for)


def effects(configs: pd.DataFrame, param: str) -> pd.DataFrame:
    """The mean objective at each value of `param`, with its 95% interval, over configurations.

    `configs`: ranked rows of `replicates.summarise`. At a value with several configurations,
    their means' mean and the t-interval over those means (the other settings averaged out);
    at a value with one, that configuration's own interval over its seeds (none with one seed).
    Indexed by the value (numbers as numbers, sorted), with the count of configurations.
    """
    column = f"params.{param}"
    done = configs[configs["rank"].notna() & configs[column].notna()]
    numeric = pd.to_numeric(done[column], errors="coerce")
    x = numeric if numeric.notna().all() else done[column].astype(str)
    rows = []
    for value, group in done.groupby(x, sort=True):
        means = group["mean"].to_numpy(dtype=float)
        if len(group) > 1:
            low, high = replicates.interval(means)
        else:
            low, high = float(group["ci_low"].iloc[0]), float(group["ci_high"].iloc[0])
        rows.append(
            {
                "value": value,
                "mean": float(means.mean()),
                "low": low,
                "high": high,
                "configurations": len(group),
                "seeds": int(group["n"].sum()),
            }
        )
    columns = ["mean", "low", "high", "configurations", "seeds"]
    return pd.DataFrame(rows, columns=["value", *columns]).set_index("value")


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[bool]:
    """Which points no other point beats on both axes (lower is better on each).

    A point is dominated when another is at least as low on both and lower on one; equal
    points dominate neither. A point with a missing coordinate is never on the front.
    """
    points = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    known = ~np.isnan(points).any(axis=1)
    front = []
    for i, point in enumerate(points):
        others = points[known]
        beaten = (others <= point).all(axis=1) & (others < point).any(axis=1)
        front.append(bool(known[i] and not beaten.any()))
    return front


def best_epochs(histories: Mapping[str, Sequence[tuple[int, float]]]) -> dict[str, tuple]:
    """For each run whose best value is not at its last epoch: (best epoch, its value, last).

    The lowest value wins; at equal values the earlier epoch. A run with no finite value is
    left out, as is one whose best is its last epoch (the table's number already is the best).
    """
    found = {}
    for run_id, history in histories.items():
        finite = [(step, value) for step, value in history if math.isfinite(value)]
        if not finite:
            continue
        step, value = min(finite, key=lambda pair: (pair[1], pair[0]))
        last = max(s for s, _ in history)
        if step != last:
            found[run_id] = (step, value, last)
    return found
