"""Successive halving over runs that reach a rung together (a packed group's members)."""

import math
import random

import optuna
import pytest

from vaelab.edges.config import Pruner
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


@pytest.mark.parametrize("min_epochs", [1, 2, 3])
def test_the_median_rule_stops_no_run_before_pruner_min_epochs(min_epochs):
    from tests.conftest import compose_config
    from vaelab.edges.config import to_run_config

    config = to_run_config(
        compose_config(
            "experiment=smoke", "sweep.pruner=median", f"sweep.pruner_min_epochs={min_epochs}"
        )
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(pruner=pruning._pruner(config))
    for _ in range(5):  # the median rule's start-up trials, all good at every epoch
        trial = study.ask()
        for epoch in range(1, 5):
            trial.report(1.0, epoch)
        study.tell(trial, 1.0)
    bad = study.ask()
    stopped_at = None
    for epoch in range(1, 5):
        bad.report(100.0, epoch)
        if bad.should_prune():
            stopped_at = epoch
            break
    assert stopped_at == min_epochs


def test_a_synchronous_rung_keeps_exactly_the_best_third_whatever_the_order():
    rng = random.Random(7)
    for n in (6, 24, 96):
        values = {trial: rng.uniform(100, 200) for trial in range(n)}
        configuration = {trial: f"c{trial}" for trial in range(n)}
        best = sorted(values, key=values.get)[: math.ceil(n / 3)]
        orders = [list(values), list(reversed(values)), rng.sample(list(values), n)]
        stops = [
            pruning.synchronous_stops(
                Pruner.successive_halving, 3, {t: values[t] for t in order}, configuration, order
            )
            for order in orders
        ]
        assert all(stop == stops[0] for stop in stops)  # the same set under any arrival order
        assert set(values) - stops[0] == set(best)  # exactly ceil(n / 3), the best


def test_a_rung_counts_earlier_launches_values_and_judges_configurations_by_their_mean():
    # Trials 0-2 were judged by an earlier launch; 3-8 arrive now: three configurations of two
    # replicates each, and the mean decides, not the luckiest seed.
    values = {0: 100.0, 1: 101.0, 2: 102.0, 3: 99.0, 4: 140.0, 5: 100.2, 6: 100.4}
    values.update({7: 150.0, 8: 98.0})
    configuration = {0: "a", 1: "b", 2: "c", 3: "d", 4: "d", 5: "e", 6: "e", 7: "f", 8: "f"}
    arriving = [3, 4, 5, 6, 7, 8]
    halving = pruning.synchronous_stops(
        Pruner.successive_halving, 3, values, configuration, arriving
    )
    # Six configurations: the best two by mean go on (a 100, e 100.3); d (119.5) stops, and so
    # does f (124), whose seed of 98 is the luckiest of all.
    assert halving == {3, 4, 7, 8}
    # The median of the six means is 101.5: a, e and b are at most that.
    assert pruning.synchronous_stops(Pruner.median, 3, values, configuration, arriving) == {
        3, 4, 7, 8
    }  # fmt: skip
    assert pruning.synchronous_stops(Pruner.median, 3, values, configuration, [1, 2]) == {2}


def measured_median_case(tmp_path) -> list:
    """The issue's measured case: h=16 and h=64, 4 seeds each, judged by the median rule."""
    from tests.conftest import compose_config
    from vaelab.edges.config import to_run_config

    return [
        to_run_config(
            compose_config(
                "experiment=smoke",
                "sweep.pruner=median",
                f"sweep.pruner_storage={tmp_path}/optuna.journal",
                f"model.intermediate_dim={hidden}",
                f"seed={seed}",
            )
        )
        for hidden in (16, 64)
        for seed in (1, 2, 3, 4)
    ]


def test_the_median_rule_prunes_a_packed_group_judged_together(tmp_path):
    # The measured case: 8 members reach each epoch together, the h=16 half about 50% worse.
    # Optuna's MedianPruner waits for 5 COMPLETE trials, which a packed group has only at its
    # end: it pruned 0 of 8. Judged together, the worse half stops at pruner_min_epochs.
    from vaelab.rules.trials import Trials

    configs = measured_median_case(tmp_path)
    trials = Trials("s1")
    for job, config in enumerate(configs):
        trials.join(job, config, None)
    stopped = {}
    for epoch in (1, 2, 3, 4):
        for job, config in enumerate(configs):
            if job in stopped:
                continue
            worse = 1.5 if config.model.intermediate_dim == 16 else 1.0
            trials.report(job, epoch, {"val/total": worse * (200 - epoch) + job * 0.1})
        for job in range(len(configs)):
            if job not in stopped and trials.should_stop(job, epoch):
                stopped[job] = epoch
    assert stopped == {0: 1, 1: 1, 2: 1, 3: 1}  # the h=16 configuration, all four seeds


@pytest.mark.parametrize(
    ("task", "params", "largest"),
    [
        ([], {}, 3),  # not swept: the config's epochs
        (["train.epochs=1,3"], {}, 3),  # a grid on the command line
        ([], {"train.epochs": "1,5"}, 5),  # a preset's grid (sweep=grid sweeps 1,3)
        ([], {"train.epochs": "choice(2,4)"}, 4),  # an Optuna choice
        ([], {"train.epochs": "int(interval(1, 6))"}, 6),  # a searched interval
        (["train.epochs=2"], {"model.latent_dim": "2,16"}, 2),
    ],
)
def test_a_sweep_knows_the_most_epochs_any_of_its_runs_trains(task, params, largest):
    from omegaconf import OmegaConf

    from vaelab.orchestration.sweep import largest_epochs

    config = OmegaConf.create(
        {
            "train": {"epochs": 3},
            "hydra": {"overrides": {"task": task}, "sweeper": {"params": params}},
        }
    )
    assert largest_epochs(config) == largest


def test_hyperband_lays_out_one_set_of_brackets_per_sweep_whatever_a_runs_epochs(tmp_path):
    # sweep=grid trains epochs 1 and 3 in one comparable group: each run's pruner took its own
    # train.epochs as Hyperband's max_resource, so trials of one study had different brackets.
    from tests.conftest import compose_config
    from vaelab.edges.config import to_run_config
    from vaelab.rules.trials import Trials

    trials = Trials("s1", max_epochs=3)
    layouts = set()
    for job, epochs in enumerate((1, 3)):
        config = to_run_config(
            compose_config(
                "experiment=smoke",
                "sweep.pruner=hyperband",
                f"sweep.pruner_storage={tmp_path}/optuna.journal",
                f"train.epochs={epochs}",
            )
        )
        pruner = trials.join(job, config, None).trial.study.pruner
        layouts.add(pruner._max_resource)  # the brackets follow from it (and min, factor)
    assert layouts == {3}  # one layout, the sweep's; before, {1, 3}


def test_the_median_rule_prunes_a_parallel_sweep_in_lockstep(tmp_path):
    # The measured case again, now as 8 parallel workers (one process, one Trials, per run)
    # whose runs reach each epoch at about the same time, in a varying order. Optuna's
    # MedianPruner waits for 5 COMPLETE trials and none completes before the end: it pruned 0.
    from vaelab.rules.trials import Trials

    configs = measured_median_case(tmp_path)
    workers = {job: Trials("s1") for job in range(len(configs))}
    for job, config in enumerate(configs):
        workers[job].join(job, config, None)
    order, stopped = random.Random(3), {}
    for epoch in (1, 2, 3, 4):
        for job in order.sample(range(len(configs)), len(configs)):  # lockstep, any order
            if job in stopped:
                continue
            worse = 1.5 if configs[job].model.intermediate_dim == 16 else 1.0
            workers[job].report(job, epoch, {"val/total": worse * (200 - epoch) + job * 0.1})
            if workers[job].should_stop(job, epoch):
                stopped[job] = epoch
    # Every h=16 seed stops; no h=64 seed does. A run is judged once 3 values are recorded at
    # its epoch, so the first two to arrive at an epoch go on to the next.
    # (This seeded order: job 3 arrived among the first two at epochs 1 and 2.)
    assert stopped == {0: 1, 1: 1, 2: 1, 3: 3}
