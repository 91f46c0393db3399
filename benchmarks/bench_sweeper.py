"""The Optuna sweeper on 2 workers: a new trial as soon as one ends, against batches of n_jobs.

    make bench-sweeper                              # both modes (~5 min on 2 CPU cores)
    python benchmarks/bench_sweeper.py --trials 12 --workers 2

`--multirun sweep=optuna` with `train.epochs=choice(1,60)` added to its search space (trials of
unequal length: on the smoke data with 4096 training digits an epoch takes about 0.3 s on one
core and a run's fixed costs about 3 s, so a 60-epoch trial is several times a 1-epoch one),
`--trials` trials through `hydra/launcher=parallel` with `--workers` workers and
`hydra.sweeper.n_jobs` the same. Run twice in this one invocation, each into a fresh store:
with `hydra.sweeper.async_trials=true` (the default: a trial is asked as soon as one ends) and
`=false` (batch mode: n_jobs trials asked, the next batch once all of them ended). Printed for
each mode:
  wall    the command's wall time, start to exit;
  window  the first run's start to the last run's end (from the store): the part of the wall
          time in which the workers could be busy (start-up and the sweep's summary aside);
  busy    worker-seconds spent in runs (each run's start to end, summed);
  idle    the workers' idle share of the window: 1 - busy / (workers x window);
  run     a run's mean time, start to end, for 1 and for 60 epochs.
Each worker gets `--threads` CPU threads (TF_NUM_INTRAOP_THREADS, OMP_NUM_THREADS; default 1),
so that 2 workers on 2 cores are 2 devices, as workers with a GPU each are: otherwise each run
spreads over every core, and a worker's idle time is lent to the other (no capacity idles).
The TPE sampler (seed 1) proposes the same first 10 trials in both modes; the epochs trained
are printed so that the work compared is seen to be alike.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = [
    "--multirun", "experiment=smoke", "data.train_limit=4096", "sweep=optuna",
    "train.epochs=choice(1,60)", "tracking.log_model=false", "hydra/launcher=parallel",
]  # fmt: skip
MODES = {"async": "true", "batch": "false"}


@dataclass(frozen=True)
class Measured:
    """One sweep's times, in seconds, and what it trained."""

    wall: float
    window: float
    busy: float
    workers: int
    runs: int
    epochs: int
    run_seconds: dict[int, float]  # a run's mean time by its epochs

    @property
    def idle(self) -> float:
        return 1 - self.busy / (self.workers * self.window)


def sweep(workdir: Path, trials: int, workers: int, threads: int, mode: str) -> Measured:
    """Run the sweep in `mode` with a fresh store under workdir; its times from the store."""
    workdir.mkdir(parents=True)
    (workdir / "data").symlink_to(REPO / "data")
    command = [
        sys.executable, str(REPO / "pipelines/train.py"), *SWEEP,
        f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.n_jobs={workers}",
        f"hydra.launcher.n_jobs={workers}", f"hydra.sweeper.async_trials={MODES[mode]}",
    ]  # fmt: skip
    started = time.time()
    result = subprocess.run(
        command,
        env={**os.environ, "VAELAB_HOME": str(workdir), **threads_env(threads)},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.time() - started
    if result.returncode != 0:
        sys.exit(f"{mode}: the sweep failed:\n{result.stderr[-3000:]}")
    spans = _child_runs(workdir / "mlruns" / "mlflow.db")
    first, last = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    return Measured(
        wall=wall,
        window=(last - first) / 1000,
        busy=sum(e - s for s, e, _ in spans) / 1000,
        workers=workers,
        runs=len(spans),
        epochs=sum(epochs for _, _, epochs in spans),
        run_seconds={
            n: sum(e - s for s, e, k in spans if k == n) / 1000 / sum(k == n for *_, k in spans)
            for n in sorted({k for *_, k in spans})
        },
    )


def threads_env(threads: int) -> dict[str, str]:
    """The environment that gives each worker's framework `threads` CPU threads."""
    names = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
    return {name: str(threads) for name in names}


def _child_runs(db: Path) -> list[tuple[int, int, int]]:
    """(start, end in ms, epochs) of every FINISHED child run."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            """SELECT r.start_time, r.end_time, CAST(p.value AS INTEGER) FROM runs r
               JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'sweep.role' AND t.value = 'child'
               JOIN params p ON p.run_uuid = r.run_uuid AND p.key = 'train.epochs'
               WHERE r.lifecycle_stage = 'active' AND r.status = 'FINISHED'"""
        ).fetchall()


def table(results: dict[str, Measured]) -> str:
    """The comparison as a Markdown table, one row per mode."""
    lines = [
        "| mode | runs | epochs | wall (s) | window (s) | busy (worker-s) | idle share "
        "| run (s) by epochs |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, m in results.items():
        lines.append(
            f"| {mode} | {m.runs} | {m.epochs} | {m.wall:.1f} | {m.window:.1f} | {m.busy:.1f} "
            f"| {m.idle:.1%} | "
            + ", ".join(f"{n}: {t:.1f}" for n, t in m.run_seconds.items())
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per worker")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"{args.trials} trials, train.epochs in (1, 60), {args.workers} workers "
          f"(hydra/launcher=parallel), {args.threads} thread(s) each; "
          f"load average {load:.1f} at the start")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            mode: sweep(Path(tmp) / mode, args.trials, args.workers, args.threads, mode)
            for mode in MODES
        }
    print(table(results))
    a, b = results["async"], results["batch"]
    print(f"async vs batch: wall {b.wall / a.wall:.2f}x, window {b.window / a.window:.2f}x; "
          f"load average {os.getloadavg()[0]:.1f} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
