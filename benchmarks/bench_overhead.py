"""What a command costs beyond its own work: start-up, reading the store, a run's extras.

    make bench-overhead                                      # this checkout (~5 min)
    python benchmarks/bench_overhead.py --baseline 85474a5   # before and after, interleaved

Each command runs in its own process with its own VAELAB_HOME (MNIST linked in), the
median of --repeat where it is cheap:
- `train.py --help`, `train.py --cfg job`, `rerun.py --help`, `rerun.py --cfg job`: wall
  time and which of TensorFlow, Keras, JAX were imported (target: <= 2 s, none);
- `report.py` on a demo sweep (6 runs): the same (target: <= 3 s, none);
- `train.py`, the default run, on a fresh store and on one that already has a run: wall time
  against its training, the sum of its `time/epoch_seconds` (target: <= training + 6 s);
- warm runs inside a sweep (`--multirun seed=1,2,3,4,5`, runs 2 to 5): each run's duration
  in MLflow (start to end) against the sum of its epoch times, the median (target: <= 1.2x);
then where a warm run's time goes, phase by phase, in this process.
With --baseline COMMIT every measurement also runs on that commit (a git worktree, the same
virtualenv), alternating with this checkout so both see the same machine load.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("tensorflow", "keras", "jax")
_PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
import atexit


def report():  # exit handlers run even on the command's fast exit
    print("FRAMEWORKS", ",".join(m for m in {frameworks} if m in sys.modules), flush=True)


atexit.register(report)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class Checkout:
    """A code version to measure: its pipelines, its package, a VAELAB_HOME per command."""

    def __init__(self, root: Path, scratch: Path, name: str):
        self.root, self.scratch, self.name = root, scratch / name, name
        self.count = 0

    def home(self) -> Path:
        self.count += 1
        home = self.scratch / f"home{self.count}"
        home.mkdir(parents=True)
        (home / "data").symlink_to(REPO / "data")
        return home

    def env(self, home: Path) -> dict[str, str]:
        return {**os.environ, "VAELAB_HOME": str(home), "PYTHONPATH": str(self.root / "src")}

    def run(self, script: str, *args: str, home: Path | None = None) -> float:
        home = home or self.home()
        command = [sys.executable, str(self.root / "pipelines" / script), *args]
        start = time.perf_counter()
        result = subprocess.run(command, env=self.env(home), capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"[{self.name}] {script} {' '.join(args)} failed:\n{result.stderr[-2000:]}")
        return seconds

    def frameworks(self, script: str, *args: str, home: Path | None = None) -> str:
        probe = _PROBE.format(frameworks=FRAMEWORKS)
        command = [sys.executable, "-c", probe, str(self.root / "pipelines" / script), *args]
        env = self.env(home or self.home())
        out = subprocess.run(command, env=env, capture_output=True, text=True).stdout
        line = [x for x in out.splitlines() if x.startswith("FRAMEWORKS")]
        return (line[-1].removeprefix("FRAMEWORKS ") or "none") if line else "?"


def store_runs(home: Path) -> list[tuple[float, float]]:
    """(duration in s, sum of epoch seconds) of every finished training run, oldest first."""
    with sqlite3.connect(home / "mlruns" / "mlflow.db") as db:
        return db.execute(
            """SELECT (r.end_time - r.start_time) / 1000.0, SUM(m.value)
               FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid
               WHERE m.key = 'time/epoch_seconds' AND r.status = 'FINISHED'
               GROUP BY r.run_uuid ORDER BY r.start_time"""
        ).fetchall()


# A measurement: a checkout and the repeat count in, (text, the number its target judges).
Measurement = Callable[[Checkout, int], tuple[str, float]]


def quick(script: str, *args: str) -> Measurement:
    def measure(checkout: Checkout, repeat: int) -> tuple[str, float]:
        seconds = statistics.median(checkout.run(script, *args) for _ in range(repeat))
        return f"{seconds:.2f} s [{checkout.frameworks(script, *args)}]", seconds

    return measure


def report(checkout: Checkout, repeat: int) -> tuple[str, float]:
    demo = checkout.home()
    checkout.run("train.py", "--multirun", "sweep=demo", home=demo)
    seconds = statistics.median(checkout.run("report.py", home=demo) for _ in range(repeat))
    return f"{seconds:.2f} s [{checkout.frameworks('report.py', home=demo)}]", seconds


def default_run(existing_store: bool) -> Measurement:
    def measure(checkout: Checkout, repeat: int) -> tuple[str, float]:
        home = checkout.home()
        if existing_store:
            checkout.run("train.py", "experiment=smoke", home=home)
        wall = checkout.run("train.py", home=home)
        training = store_runs(home)[-1][1]
        return f"{wall:.1f} s = training {training:.1f} s + {wall - training:.1f} s", (
            wall - training
        )

    return measure


def warm_runs(checkout: Checkout, repeat: int) -> tuple[str, float]:
    home = checkout.home()
    checkout.run("train.py", "--multirun", "seed=1,2,3,4,5", home=home)
    ratios = [duration / epochs for duration, epochs in store_runs(home)[1:]]
    median = statistics.median(ratios)
    return f"median {median:.2f}x of " + " ".join(f"{r:.2f}" for r in ratios), median


# Name, measurement, the target its number is judged by.
MEASUREMENTS: list[tuple[str, Measurement, Callable[[float], bool], str]] = [
    ("train.py --help", quick("train.py", "--help"), lambda s: s <= 2, "<= 2 s"),
    ("train.py --cfg job", quick("train.py", "--cfg", "job"), lambda s: s <= 2, "<= 2 s"),
    ("rerun.py --help", quick("rerun.py", "--help"), lambda s: s <= 2, "<= 2 s"),
    ("rerun.py --cfg job", quick("rerun.py", "--cfg", "job"), lambda s: s <= 2, "<= 2 s"),
    ("report.py (demo sweep)", report, lambda s: s <= 3, "<= 3 s"),
    ("train.py, fresh store", default_run(False), lambda s: s <= 6, "<= training + 6 s"),
    ("train.py, existing store", default_run(True), lambda s: s <= 6, "<= training + 6 s"),
    ("warm run in a sweep", warm_runs, lambda r: r <= 1.2, "<= 1.2x its epochs"),
]


def phases_of_a_warm_run() -> str:
    """Where a warm run's time goes: each phase of `train_and_evaluate`, timed in place."""
    from hydra import compose, initialize_config_dir

    from vaelab.edges import tracking
    from vaelab.edges.config import register_configs, to_run_config
    from vaelab.engines import evaluation, fit, loop, solo
    from vaelab.orchestration import engine_inputs
    from vaelab.orchestration import train as run_module
    from vaelab.rules import figures, recorder, run_writes

    spent: dict[str, float] = collections.defaultdict(float)

    def timed(owner: object, name: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[f"{getattr(owner, '__name__', owner)}.{name}"] += time.perf_counter() - start

        setattr(owner, name, wrapper)

    for owner, names in (
        (engine_inputs, ("load_mnist", "group_data")),
        (solo, ("build_model", "measure")),
        (fit, ("train_with_fit",)),
        (loop, ("train_with_loop",)),
        (evaluation, ("evaluate", "pictures", "importance_weighted_bound")),
        (run_module, ("environment_tags",)),  # each timed where it is called from
        (recorder, ("input_texts", "final_metrics")),
        (run_writes, ("log_dataset", "write_artifacts")),
        (figures, ("picture_figures", "curve_figures")),
        (tracking, ("open_configured", "create_run")),
        (tracking.Run, ("log", "log_keras_model", "end")),
    ):
        for name in names:
            timed(owner, name)
    register_configs()
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"),
    ):
        where = [f"paths.store_dir={tmp}/mlruns", f"paths.output_dir={tmp}/out"]
        run_module.train_and_evaluate(to_run_config(compose("config", [*where, "seed=2"])))
        spent.clear()
        start = time.perf_counter()
        result = run_module.train_and_evaluate(to_run_config(compose("config", [*where, "seed=1"])))
        wall = time.perf_counter() - start
        store = tracking.open_store(f"sqlite:///{tmp}/mlruns/mlflow.db", "vaelab")
        epochs = sum(
            v for _, v in tracking.metric_history(store, result.run_id, "time/epoch_seconds")
        )
    lines = [f"  {wall:6.2f} s  the whole warm run (its epochs: {epochs:.2f} s)"]
    lines += [f"  {s:6.2f} s  {name}" for name, s in sorted(spent.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def measure_all(checkouts: list[Checkout], repeat: int) -> dict[str, dict[str, tuple[str, float]]]:
    """Every measurement on every checkout, alternating checkouts measurement by measurement."""
    results: dict[str, dict[str, tuple[str, float]]] = {c.name: {} for c in checkouts}
    for name, measure, _, _ in MEASUREMENTS:
        for checkout in checkouts:
            results[checkout.name][name] = measure(checkout, repeat)
            print(f"  [{checkout.name}] {name}: {results[checkout.name][name][0]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="a commit to measure too (before/after)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        checkouts = [Checkout(REPO, scratch, "now")]
        worktree = scratch / "baseline"
        if args.baseline:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree)]
                + [args.baseline],
                check=True,
                capture_output=True,
            )
            checkouts.insert(0, Checkout(worktree, scratch, f"before ({args.baseline})"))
        try:
            results = measure_all(checkouts, args.repeat)
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                    check=False,
                )
    titles = [c.name for c in checkouts]
    print(f"\n{'command':<26}" + "".join(f"  {t:<40}" for t in titles) + "  target")
    for name, _, meets, target in MEASUREMENTS:
        cells = "".join(f"  {results[t][name][0]:<40}" for t in titles)
        verdict = "met" if meets(results[titles[-1]][name][1]) else "NOT met"
        print(f"{name:<26}{cells}  {target}: {verdict}")
    print("\nWhere a warm default run's time goes (this checkout, this process):")
    print(phases_of_a_warm_run())


if __name__ == "__main__":
    main()
