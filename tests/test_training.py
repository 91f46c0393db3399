"""The trainers' pure pieces: batch orders, chunks of equal batches, epoch lines."""

import numpy as np

from vaelab.engines import batches, loop
from vaelab.engines.base import non_finite_message


def test_every_style_visits_the_same_seeded_orders():
    orders = np.stack(list(batches.epoch_orders(10, epochs=3, seed=4, shuffle=True)))
    assert orders.shape == (3, 10) and all(sorted(o) == list(range(10)) for o in orders)
    assert not np.array_equal(orders[0], orders[1])  # a new permutation each epoch
    # 3 epochs are exactly the start of 5
    longer = batches.epoch_orders(10, 5, seed=4, shuffle=True)
    np.testing.assert_array_equal([longer[k] for k in range(3)], orders)
    unshuffled = batches.epoch_orders(10, 2, seed=4, shuffle=False)
    assert all((order == np.arange(10)).all() for order in unshuffled)


def test_a_chunk_is_split_into_full_batches_and_the_last_smaller_one():
    # 55,000 images in batches of 64: 859 full batches and one of 24.
    assert batches.equal_batches(0, 64, 64, 55_000) == [(0, 4096, 64)]
    assert batches.equal_batches(832, 860, 64, 55_000) == [
        (53_248, 54_976, 27),
        (54_976, 55_000, 1),
    ]
    assert batches.equal_batches(0, 4, 64, 256) == [(0, 256, 4)]
    assert batches.equal_batches(0, 1, 64, 10) == [(0, 10, 1)]
    covered = [
        (start, stop)
        for first, last in loop._chunks(860, 64)
        for start, stop, _ in batches.equal_batches(first, last, 64, 55_000)
    ]
    assert covered[0][0] == 0 and covered[-1][1] == 55_000
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))


def test_a_non_finite_loss_is_named_with_its_epoch():
    assert non_finite_message(3, {"train/total": 1.0}) is None
    message = non_finite_message(3, {"train/total": float("nan"), "val/kl": 1.0})
    assert message.startswith("non-finite loss at epoch 3 (train/total=nan)")
