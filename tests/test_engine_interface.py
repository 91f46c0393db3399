"""What engines declare on their interface (`engines.base`), and the orchestration reads.

The orchestration plans, tags and announces groups for an engine that says it trains jobs
together (`Engine.groups_jobs`), whatever the engine is called; a job's architecture is one
of a closed set whose values are what runs already record.
"""

from types import SimpleNamespace

import pytest

from tests.conftest import TINY, Collected, compose_config
from vaelab.edges.config import to_run_config
from vaelab.engines.solo import SoloEngine
from vaelab.orchestration.engine_inputs import engine_job, group_data
from vaelab.orchestration.grouping import group_tags, groups
from vaelab.rules.runs import PlannedRun
from vaelab.vocab.choices import Architecture
from vaelab.vocab.tags import ENGINE, PACK_GROUP, PACK_SIZE


class NewEngine:
    """An engine that is neither "solo" nor "packed": only what it declares counts."""

    name = "new"
    warms_up_model_logging = False

    def __init__(self, groups_jobs: bool):
        self.groups_jobs = groups_jobs

    def device(self) -> str:
        return "CPU"


def planned(*seeds: int) -> list[PlannedRun]:
    return [
        PlannedRun(to_run_config(compose_config(*TINY, f"seed={s}")), [], f"hash{s}") for s in seeds
    ]


@pytest.mark.parametrize("together", [True, False])
def test_an_engine_is_grouped_and_tagged_by_what_it_declares_not_by_its_name(together):
    runs, mnist = planned(1, 2, 3), SimpleNamespace(x_train=range(60_000), x_test=range(10_000))
    engine = NewEngine(groups_jobs=together)
    planned_groups = groups(engine, runs, [0, 1, 2], mnist, budget=2**34, max_group_size=None)
    assert planned_groups == ([[0, 1, 2]] if together else [[0], [1], [2]])
    tags = group_tags(engine, None, runs, 0)
    assert tags[ENGINE] == "new"
    assert (PACK_GROUP in tags, tags.get(PACK_SIZE)) == ((True, "3") if together else (False, None))


def test_the_solo_engine_trains_each_job_alone_and_logs_each_model_as_it_comes():
    assert SoloEngine.groups_jobs is False and SoloEngine.warms_up_model_logging is False


@pytest.mark.parametrize(
    "style, architecture",
    [("functional", "functional"), ("subclass", "subclass"), ("custom_loop", "subclass")],
)
def test_a_jobs_architecture_is_an_architecture_whose_value_runs_record(style, architecture):
    job = engine_job(to_run_config(compose_config(*TINY, f"style={style}")))
    assert isinstance(job.architecture, Architecture)
    assert job.architecture == architecture and str(job.architecture) == architecture


class InOrder(Collected):
    """The events, and the order of each job's training end and its measured result."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def job_trained(self, job, history):
        self.calls.append(("trained", job))
        super().job_trained(job, history)

    def job_finished(self, job, outcome):
        self.calls.append(("finished", job))
        super().job_finished(job, outcome)


def test_a_job_s_history_is_reported_when_its_training_ends_before_it_is_measured():
    # The recorder draws the loss curves from it while the engine measures the job.
    config = to_run_config(compose_config(*TINY, "train.epochs=2"))
    events = InOrder()
    SoloEngine().train([engine_job(config)], group_data(config), events)
    assert events.calls == [("trained", 0), ("finished", 0)]
    assert events.trained[0] == events.outcomes[0].history
    assert len(events.trained[0]["train/total"]) == 2


def test_an_error_raised_while_a_signal_unwinds_is_the_signal(monkeypatch):
    # Seen in CI under load: SIGTERM landed inside TensorFlow's device scope, whose exit then
    # raised "Exiting device scope without proper scope nesting": the run was stopped (KILLED,
    # exit 143), not broken (FAILED, exit 1).
    from vaelab.engines import solo
    from vaelab.vocab.errors import interrupt_behind

    def fit_cut_by_a_signal(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("Exiting device scope without proper scope nesting") from None

    monkeypatch.setattr(solo, "train_with_fit", fit_cut_by_a_signal)
    config = to_run_config(compose_config(*TINY))
    events = InOrder()
    with pytest.raises(KeyboardInterrupt):
        SoloEngine().train([engine_job(config)], group_data(config), events)
    assert events.failures == {}
    assert interrupt_behind(RuntimeError("a plain failure")) is None
