"""Successive halving over runs that reach a rung together (a packed group's members)."""

import optuna
import pytest

from vaelab.rules import pruning


def promoted(order: list[int], values: list[float]) -> int:
    """How many of the trials Optuna's successive halving keeps at the first rung."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(pruner=pruner)
    trials = [study.ask() for _ in values]
    for trial, value in zip(trials, values, strict=True):
        trial.report(value, 1)  # every member reports before any is judged
    return sum(not trials[i].should_prune() for i in order)


@pytest.mark.parametrize("members", [24, 96])
def test_members_reaching_a_rung_together_keep_about_a_third(members):
    # Quality trending with the grid's position (larger models later): the worst case.
    values = [1000.0 - i for i in range(members)]
    in_grid_order = promoted(list(range(members)), values)
    judged = pruning.judging_order(list(range(members)), "sweep", 1)
    assert sorted(judged) == list(range(members)) and judged != list(range(members))
    assert judged == pruning.judging_order(list(range(members)), "sweep", 1)  # seeded
    assert in_grid_order == members  # each one the best so far: nothing pruned
    # In a random order, about a third (the trials judged first see few competitors).
    assert members / 5 <= promoted(judged, values) <= members / 2
