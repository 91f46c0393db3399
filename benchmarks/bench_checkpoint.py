"""What checkpointing every epoch costs a default run: epoch time and size on disk.

    make bench-checkpoint                          # in-process: the default run, 8 epochs
    python benchmarks/bench_checkpoint.py --end-to-end      # and whole runs, 4 pairs
    python benchmarks/bench_checkpoint.py style=custom_loop
    KERAS_BACKEND=jax python benchmarks/bench_checkpoint.py style=custom_loop

In-process (the figure the target is read against): the default run's model trained by the
engine, epoch by epoch, and after each epoch its checkpoint taken as a run takes it (the
state gathered, encoded with its checksum, stored as an artifact of a real run in a sqlite
store, the superseded one removed), but synchronously on the training thread, so its whole
cost is timed: an upper bound on what it costs a run, whose recorder writes on other threads.
Both are timed in the same process, epoch by epoch, so the machine's drift hits them alike.

End to end (`--end-to-end`): runs `pipelines/train.py` (the default config, 6 epochs so
that every run has five epoch-to-epoch intervals; extra arguments are Hydra overrides) with
`train.checkpoint_every=0` and with `=1`, alternating (off, on, off, on, ...), each in its
own process and fresh store. Epoch time is read from the store: the gap between the
timestamps of consecutive epochs' `train/total`, which includes whatever the checkpoint
costs the training thread (the state is gathered there; encoding and the upload happen on
the recorder's writer threads while the next epoch trains). Prints the median epoch time of
each and their ratio. On a shared 2-core VM whole runs differ by up to half their epoch time
from one to the next, whatever they do: read these against the pairs' spread, printed too.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 6
TARGET = 0.05  # checkpointing may add at most this share to the epoch time


def epoch_seconds(workdir: Path, overrides: list[str]) -> list[float]:
    """The run's epoch-to-epoch intervals, in seconds, read from its store."""
    workdir.mkdir(parents=True)
    (workdir / "data").symlink_to(REPO / "data")
    command = [sys.executable, str(REPO / "pipelines/train.py"), f"train.epochs={EPOCHS}"]
    result = subprocess.run(
        [*command, *overrides],
        env={**os.environ, "VAELAB_HOME": str(workdir)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"{' '.join(overrides)} failed:\n{result.stderr[-3000:]}")
    with sqlite3.connect(workdir / "mlruns" / "mlflow.db") as connection:
        stamps = [
            t
            for (t,) in connection.execute(
                "SELECT timestamp FROM metrics WHERE key = 'train/total' ORDER BY step"
            )
        ]
    return [(b - a) / 1000 for a, b in zip(stamps, stamps[1:], strict=False)]


def checkpoint_sizes(workdir: Path) -> list[int]:
    """Sizes in bytes of the checkpoints a run kept in its artifacts."""
    return sorted(p.stat().st_size for p in (workdir / "mlruns").rglob("checkpoints/*.ckpt"))


def in_process(overrides: list[str], epochs: int) -> None:
    """Each epoch's training time and its checkpoint's cost, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hydra import compose, initialize_config_dir

    from vaelab.edges import tracking
    from vaelab.edges.config import register_configs, to_run_config
    from vaelab.engines import backend
    from vaelab.engines.base import Checkpoint
    from vaelab.engines.fit import state_arrays, train_with_fit
    from vaelab.engines.loop import train_with_loop
    from vaelab.engines.solo import build_model
    from vaelab.orchestration.engine_inputs import engine_job, group_data
    from vaelab.rules import checkpoints
    from vaelab.rules.run_writes import write_checkpoint
    from vaelab.vocab.metrics import EPOCH_SECONDS

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"train.epochs={epochs}", *overrides])
    config = to_run_config(cfg)
    job = engine_job(config)
    data = group_data(config)
    backend.configure_backend(job.seed, job.deterministic)
    model = build_model(job)
    train_seconds: list[float] = []
    checkpoint_seconds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = tracking.open_store(f"sqlite:///{tmp}/mlflow.db", "bench-checkpoint")
        run = tracking.create_run(store, "checkpointed", {})
        known: list[str] = []

        def on_epoch(epoch: int, values: dict[str, float]) -> bool:
            start = time.perf_counter()
            arrays = state_arrays(model, model._vaelab_optimizer)
            checkpoint = Checkpoint(epoch, "solo", arrays, {})
            write_checkpoint(store, run, checkpoint, config.train.checkpoints_kept, known)
            checkpoint_seconds.append(time.perf_counter() - start)
            train_seconds.append(values[EPOCH_SECONDS])
            return False

        x_train, x_val = data.train_pool[data.train_rows], data.val_pool[data.val_rows]
        trainer = train_with_loop if job.loop else train_with_fit
        trainer(model, x_train, x_val, job, on_epoch)
        size = len(tracking.read_artifact_bytes(store, run.run_id, checkpoints.path(epochs)))
        run.end("FINISHED")
    # The first epoch compiles and the first write imports MLflow's artifact code: both once
    # per process, so the steady state is read from the epochs after it.
    train, cost = statistics.median(train_seconds[1:]), statistics.median(checkpoint_seconds[1:])
    label = " ".join(overrides) or "the default run"
    print(f"{label}, in-process, {epochs} epochs, median of epochs 2-{epochs}:")
    print(f"  training one epoch        {train:7.3f} s")
    print(
        f"  checkpoint, synchronous   {cost:7.3f} s  (first epoch's: {checkpoint_seconds[0]:.3f} s)"
    )
    verdict = "met" if cost / train <= TARGET else "NOT met"
    print(f"checkpointing adds at most {cost / train:+.1%} (target <= {TARGET:.0%}: {verdict})")
    kept = config.train.checkpoints_kept
    print(
        f"one checkpoint: {size / 1024:.0f} KiB; a run keeps {kept}: {kept * size / 1024:.0f} KiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4, help="runs with and without, each")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the in-process part")
    parser.add_argument(
        "--end-to-end", action="store_true", help="also whole runs with and without (noisy)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    in_process(args.overrides, args.epochs)
    if args.end_to_end:
        end_to_end(args)


def end_to_end(args: argparse.Namespace) -> None:
    off: list[float] = []
    on: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            without = epoch_seconds(
                Path(tmp, f"off-{pair}"), [*args.overrides, "train.checkpoint_every=0"]
            )
            with_ = epoch_seconds(
                Path(tmp, f"on-{pair}"), [*args.overrides, "train.checkpoint_every=1"]
            )
            # Each pair on its own shows the machine's noise, against which the medians are read.
            print(f"pair {pair + 1}: median {statistics.median(without):.2f} s without, "
                  f"{statistics.median(with_):.2f} s with", flush=True)  # fmt: skip
            off += without
            on += with_
            kept = checkpoint_sizes(Path(tmp, f"on-{pair}"))
            if checkpoint_sizes(Path(tmp, f"off-{pair}")):
                sys.exit("a run with train.checkpoint_every=0 wrote checkpoints")
    if not kept:
        sys.exit("a run with train.checkpoint_every=1 kept no checkpoint")
    a, b = statistics.median(off), statistics.median(on)
    label = " ".join(args.overrides) or "the default run"
    print(f"{label}, {EPOCHS} epochs, {args.pairs} run(s) each, median epoch-to-epoch seconds:")
    print(f"  {'checkpoint_every=0':<20} {a:>7.2f} s  ({len(off)} intervals)")
    print(f"  {'checkpoint_every=1':<20} {b:>7.2f} s  ({len(on)} intervals)")
    verdict = "met" if b / a - 1 <= TARGET else "NOT met"
    print(f"checkpointing adds {b / a - 1:+.1%} (target <= {TARGET:.0%}: {verdict})")
    print(f"one checkpoint: {kept[-1] / 1024:.0f} KiB; a run keeps {len(kept)}: "
          f"{sum(kept) / 1024:.0f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
