"""What a command costs beyond its own work: start-up, reading the store, a run's extras.

    make bench-overhead                                   # this checkout (~4 min)
    python benchmarks/bench_overhead.py --baseline 6a5a6bb   # the same, before and after

Measured, each command in its own process against its own fresh store (median of --repeat):
- `train.py --help`, `train.py --cfg job`, `rerun.py --help`: wall time, and whether
  TensorFlow, Keras or JAX was imported;
- `report.py` on a demo sweep (6 runs), the same;
- `train.py` (the default run): wall time against its training (the sum of its epochs);
- a warm run inside a sweep (`--multirun seed=1,2`, the second run): its duration in MLflow
  (start to end) against the sum of its epoch times;
then a profile of a warm run's work after training, in this process.
With --baseline COMMIT, every measurement also runs on that commit (a git worktree, the same
virtualenv), and both columns are printed side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("tensorflow", "keras", "jax")
_PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("FRAMEWORKS", ",".join(m for m in {frameworks} if m in sys.modules))
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

    def run(self, script: str, *args: str, home: Path | None = None) -> tuple[float, str]:
        home = home or self.home()
        command = [sys.executable, str(self.root / "pipelines" / script), *args]
        start = time.perf_counter()
        result = subprocess.run(command, env=self.env(home), capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"[{self.name}] {script} {' '.join(args)} failed:\n{result.stderr[-2000:]}")
        return seconds, result.stdout + result.stderr

    def frameworks(self, script: str, *args: str, home: Path | None = None) -> str:
        probe = _PROBE.format(frameworks=FRAMEWORKS)
        command = [sys.executable, "-c", probe, str(self.root / "pipelines" / script), *args]
        env = self.env(home or self.home())
        out = subprocess.run(command, env=env, capture_output=True, text=True).stdout
        line = [x for x in out.splitlines() if x.startswith("FRAMEWORKS")]
        return (line[-1].removeprefix("FRAMEWORKS ") or "none") if line else "?"


def store_runs(home: Path) -> list[tuple[str, float, float]]:
    """(run id, duration in s, sum of epoch seconds) of every finished training run."""
    with sqlite3.connect(home / "mlruns" / "mlflow.db") as db:
        return db.execute(
            """SELECT r.run_uuid, (r.end_time - r.start_time) / 1000.0, SUM(m.value)
               FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid
               WHERE m.key = 'time/epoch_seconds' AND r.status = 'FINISHED'
               GROUP BY r.run_uuid ORDER BY r.start_time"""
        ).fetchall()


def measure(checkout: Checkout, repeat: int) -> dict[str, str]:
    results: dict[str, str] = {}
    for script, args in (
        ("train.py", ["--help"]),
        ("train.py", ["--cfg", "job"]),
        ("rerun.py", ["--help"]),
    ):
        label = f"{script} {' '.join(args)}"
        seconds = statistics.median(checkout.run(script, *args)[0] for _ in range(repeat))
        results[label] = f"{seconds:.2f} s [{checkout.frameworks(script, *args)}]"
    demo = checkout.home()
    checkout.run("train.py", "--multirun", "sweep=demo", home=demo)
    seconds = statistics.median(checkout.run("report.py", home=demo)[0] for _ in range(repeat))
    results["report.py (demo sweep)"] = (
        f"{seconds:.2f} s [{checkout.frameworks('report.py', home=demo)}]"
    )
    home = checkout.home()
    wall, _ = checkout.run("train.py", home=home)
    (_, _, training), *_ = store_runs(home)
    results["train.py (default run)"] = (
        f"{wall:.1f} s = training {training:.1f} s + {wall - training:.1f} s"
    )
    home = checkout.home()
    checkout.run("train.py", "--multirun", "seed=1,2", home=home)
    _, (_, duration, epochs) = store_runs(home)
    results["warm run in a sweep"] = (
        f"{duration:.2f} s / {epochs:.2f} s of epochs = {duration / epochs:.2f}x"
    )
    return results


def profile_warm_run() -> str:
    """Where a warm run's time goes after its epochs: the vaelab calls, by cumulative time."""
    sys.path.insert(0, str(REPO))
    from tests.conftest import compose_config
    from vaelab.run import train_and_evaluate

    with tempfile.TemporaryDirectory() as tmp:
        where = [f"paths.store_dir={tmp}/mlruns", f"paths.output_dir={tmp}/out"]
        train_and_evaluate(compose_config(*where, "seed=2"))
        profiler = cProfile.Profile()
        profiler.enable()
        train_and_evaluate(compose_config(*where, "seed=1"))
        profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("cumulative")
    rows = []
    for (path, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        if "/vaelab/" in path and not function.startswith("<"):
            rows.append((cumulative, f"{Path(path).stem}.{function}"))
    return "\n".join(f"  {seconds:6.2f} s  {name}" for seconds, name in sorted(rows)[::-1][:18])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="a commit to measure too (before/after)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        columns = {"this checkout": measure(Checkout(REPO, scratch, "now"), args.repeat)}
        if args.baseline:
            worktree = scratch / "baseline"
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "worktree",
                    "add",
                    "--detach",
                    str(worktree),
                    args.baseline,
                ],
                check=True,
                capture_output=True,
            )
            try:
                before = measure(Checkout(worktree, scratch, "before"), args.repeat)
                columns = {f"before ({args.baseline})": before, **columns}
            finally:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                    check=False,
                )
    names = list(next(iter(columns.values())))
    print(f"{'command':<26}" + "".join(f"  {title:<44}" for title in columns))
    for name in names:
        print(f"{name:<26}" + "".join(f"  {values[name]:<44}" for values in columns.values()))
    print("\nA warm default run, profiled (cumulative seconds of vaelab's own calls):")
    print(profile_warm_run())


if __name__ == "__main__":
    main()
