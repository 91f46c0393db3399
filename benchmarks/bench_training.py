"""Epoch time of the notebook's plain `fit` against each style as the pipeline trains it.

    make bench                       # or: python benchmarks/bench_training.py --epochs 4
    KERAS_BACKEND=jax python benchmarks/bench_training.py

Everything runs in one process on the same verified MNIST split, so the machine's noise hits
all rows alike. (a) is the notebook's way: the functional VAE, `compile(Adam())` with Keras's
defaults and `fit(x, epochs, batch_size=64)`, no validation. The styles run through the
pipeline's own trainers, which also validate every epoch (counted in their time). Reported:
median seconds per epoch after a warm-up epoch, the ratio to (a), final losses, and a
results check in which every path trains on the same batch order (shuffle off) and the
per-epoch losses are compared with (a)'s. (The cost of a run beyond its training:
benchmarks/bench_overhead.py.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import keras

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.conftest.compose_config: the real config

from tests.conftest import compose_config  # noqa: E402
from vaelab.edges.config import to_run_config  # noqa: E402
from vaelab.engines import backend  # noqa: E402
from vaelab.engines.fit import train_with_fit  # noqa: E402
from vaelab.engines.loop import train_with_loop  # noqa: E402
from vaelab.orchestration.engine_inputs import engine_job, group_data  # noqa: E402
from vaelab.vae.losses import LossSpec  # noqa: E402
from vaelab.vae.models import build_vae  # noqa: E402
from vaelab.vocab.metrics import TERMS  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds, self.losses = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
        self.losses.append({name: float(logs[name]) for name in TERMS})


def notebook_fit(x, epochs, seed, spec, shuffle=True, x_val=None):
    """(a): plain Keras fit with default settings, as the notebook trains."""
    backend.configure_backend(seed, deterministic=True)
    model = build_vae("functional", 784, 64, 32, seed, spec)
    model.compile(optimizer=keras.optimizers.Adam())
    timer = EpochTimer()
    validation = None if x_val is None else (x_val,)
    model.fit(
        x,
        epochs=epochs,
        batch_size=64,
        shuffle=shuffle,
        validation_data=validation,
        callbacks=[timer],
        verbose=0,
    )
    return timer.seconds, timer.losses


def pipeline_style(style, x, x_val, epochs, seed, spec, steps, shuffle=True):
    """(b): the trainer the pipeline uses for this style, with its validation pass."""
    backend.configure_backend(seed, deterministic=True)
    overrides = [f"style={style}", f"train.epochs={epochs}", f"seed={seed}"]
    overrides += [f"style.steps_per_execution={steps}", f"train.shuffle={shuffle}"]
    job = engine_job(to_run_config(compose_config(*overrides)))
    model = build_vae(job.architecture, 784, 64, 32, seed, spec)
    seconds, losses = [], []

    def on_epoch(epoch, metrics):
        seconds.append(metrics["time/epoch_seconds"])
        losses.append({name: metrics[f"train/{name}"] for name in TERMS})
        return False

    if job.loop:
        train_with_loop(model, x, x_val, job, on_epoch, verbose=0)
    else:
        train_with_fit(model, x, x_val, job, on_epoch)
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs + 1 warm-up")
    parser.add_argument("--check-epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="steps_per_execution")
    parser.add_argument("--repeats", type=int, default=2, help="round-robin passes")
    args = parser.parse_args()

    config = to_run_config(compose_config())
    pools = group_data(config)
    x, x_val = pools.train_pool[pools.train_rows], pools.val_pool[pools.val_rows]
    seed, spec = config.seed, LossSpec("bce", "sum", "sum", 1.0)
    steps = args.steps or config.style.steps_per_execution
    epochs = args.epochs + 1

    print(
        f"backend={keras.backend.backend()}  device={backend.device_name()}"
        f"  cpus={os.cpu_count()}  train={len(x)}  val={len(x_val)}  batch=64"
        f"  steps_per_execution={steps}  epochs={args.epochs} (+1 warm-up)\n"
    )
    # Round robin, so that the machine's drift over time hits every path alike.
    paths = {"(a) notebook fit": lambda: notebook_fit(x, epochs, seed, spec)}
    for style in ("functional", "subclass", "custom_loop"):
        paths[f"(b) {style}"] = lambda style=style: pipeline_style(
            style, x, x_val, epochs, seed, spec, steps
        )
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    final: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, train in paths.items():
            times, losses = train()
            seconds[name] += times[1:]  # the first epoch of each pass warms up
            final[name] = losses[-1]
    base = statistics.median(seconds["(a) notebook fit"])
    print(
        f"{'path':<20} {'s/epoch':>9} {'ratio':>7} {'train/total':>12} {'train/kl':>9}"
        f"   (median of {args.epochs} epochs x {args.repeats} passes)"
    )
    for name, times in seconds.items():
        median = statistics.median(times)
        print(
            f"{name:<20} {median:>9.3f} {median / base:>6.2f}x {final[name]['total']:>12.4f}"
            f" {final[name]['kl']:>9.4f}"
        )

    print(
        f"\nResults unchanged: same batch order (shuffle off) and, since validation draws "
        f"from the same sampling generator, (a) validating too; {args.check_epochs} epochs; "
        "largest relative difference of any train loss term from (a)'s"
    )
    _, reference = notebook_fit(x, args.check_epochs, seed, spec, shuffle=False, x_val=x_val)
    for style in ("functional", "subclass", "custom_loop"):
        _, losses = pipeline_style(
            style, x, x_val, args.check_epochs, seed, spec, steps, shuffle=False
        )
        worst = max(
            abs(b[t] - a[t]) / abs(a[t])
            for a, b in zip(reference, losses, strict=True)
            for t in TERMS
        )
        curve = " ".join(f"{e['total']:.4f}" for e in losses)
        print(f"  {style:<12} max rel diff {worst:.2e}   train/total per epoch: {curve}")
    print(
        f"  {'(a)':<12} {'':>22}   train/total per epoch: "
        + " ".join(f"{e['total']:.4f}" for e in reference)
    )


if __name__ == "__main__":
    main()
