"""A packed member's epoch orders are computed when its epoch comes, as a solo run's are."""

import dataclasses

from tests.conftest import TINY, Collected, compose_config, count_permutations
from vaelab.edges.config import to_run_config
from vaelab.engines.packed.engine import PackedEngine
from vaelab.orchestration.engine_inputs import engine_job, group_data


def test_members_of_a_billion_epochs_draw_only_the_orders_of_the_epochs_they_train(monkeypatch):
    config = to_run_config(compose_config(*TINY, "train.epochs=1000000000"))
    pools = group_data(config)
    first = engine_job(config)
    members = [first, dataclasses.replace(first, seed=2, latent_dim=4)]
    drawn = count_permutations(monkeypatch, limit=10)
    collected = Collected(stop_at={0: 1, 1: 2})  # told to stop after epochs 1 and 2
    PackedEngine().train(members, pools, collected)
    assert not collected.failures and collected.stopped == {0: 1, 1: 2}
    assert [len(collected.epochs[i]) for i in (0, 1)] == [1, 2]
    # The orders of the epochs trained (1 + 2), and one more for member 0 if its lane stays
    # laid out (idle) in the second round: not a billion.
    assert drawn[0] in (1 + 2, 1 + 2 + 1)
