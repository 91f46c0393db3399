"""Epoch orders are computed when an epoch asks for them: a huge `train.epochs` costs nothing."""

import numpy as np
import pytest

from tests.conftest import TINY, Collected, compose_config, count_permutations
from vaelab.edges.config import to_run_config
from vaelab.engines import batches
from vaelab.engines.solo import SoloEngine
from vaelab.orchestration.engine_inputs import engine_job, group_data

HUGE = 10**9


def eager_orders(n: int, epochs: int, seed: int, shuffle: bool) -> np.ndarray:
    """The orders as they were built before (every epoch's up front): the numbers to keep."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(n) if shuffle else np.arange(n) for _ in range(epochs)]
    return np.stack(rows).astype(np.int32)


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_each_epochs_order_is_the_one_built_up_front_before(seed):
    expected = eager_orders(1000, 6, seed, shuffle=True)
    orders = batches.epoch_orders(1000, 6, seed, shuffle=True)
    assert len(orders) == 6
    for k in (0, 1, 2, 3, 4, 5, 2, 0, 5):  # in order, then back (a new generator), then on
        assert orders[k].dtype == np.int32 and np.array_equal(orders[k], expected[k]), k
    assert np.array_equal(np.stack(list(orders)), expected)
    assert not orders[0].flags.writeable  # handed out cached: nobody may reorder it
    assert np.array_equal(batches.epoch_orders(7, 3, seed, shuffle=False)[2], np.arange(7))
    with pytest.raises(IndexError):
        orders[6]


def test_a_billion_epochs_draw_only_the_orders_asked_for(monkeypatch):
    drawn = count_permutations(monkeypatch, limit=10)
    orders = batches.epoch_orders(60_000, HUGE, seed=1, shuffle=True)
    assert len(orders) == HUGE and drawn == [0]  # nothing built up front
    first, third = orders[0], orders[2]
    assert drawn == [3] and not isinstance(orders, np.ndarray)
    expected = eager_orders(60_000, 3, seed=1, shuffle=True)
    assert np.array_equal(first, expected[0]) and np.array_equal(third, expected[2])


@pytest.mark.parametrize("style", ["functional", "custom_loop"])
def test_a_run_of_a_billion_epochs_trains_its_first_without_building_the_rest(style, monkeypatch):
    config = to_run_config(compose_config(*TINY, f"style={style}", f"train.epochs={HUGE}"))
    pools = group_data(config)
    drawn = count_permutations(monkeypatch, limit=10)
    collected = Collected(stop_at={0: 1})  # told to stop after its first epoch
    SoloEngine().train([engine_job(config)], pools, collected)
    assert not collected.failures and collected.stopped == {0: 1}
    assert len(collected.epochs[0]) == 1 and drawn == [1]
