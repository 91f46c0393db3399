"""Real Hydra multiruns of the real pipeline, shrunk: grouping, failures, resume, parallel."""

import re
import shutil
import sqlite3
import subprocess
import sys
import time
from shutil import ignore_patterns

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY, compose_config, isolated
from vaelab.edges import provenance, tracking
from vaelab.orchestration.report import make_report
from vaelab.rules import pruning
from vaelab.vocab.tags import CHILD, SWEEP_ROLE


def output(result):
    return result.stdout + result.stderr


def sweep_runs(store_uri, role=CHILD):
    store = tracking.open_store(store_uri, "vaelab")
    return tracking.find_runs(store, {SWEEP_ROLE: role})


def test_grid_records_each_run_once_under_one_parent(run_app, store_uri):
    grid = ["train.py", "--multirun", *TINY, "style=functional,custom_loop"]
    result = run_app(*grid)
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,) = sweep_runs(store_uri, "parent")
    children = sweep_runs(store_uri)
    assert parent.status == "FINISHED" and parent.tags["sweep.count.finished"] == "2"
    assert sorted(r.params["style.name"] for r in children) == ["custom_loop", "functional"]
    assert all(r.tags["mlflow.parentRunId"] == parent.run_id for r in children)
    assert all(r.tags["sweep.id"] == parent.tags["sweep.id"] for r in children)
    best = min(children, key=lambda r: r.metrics["val/total"])
    assert parent.tags["sweep.best_run_id"] == best.run_id
    assert "Sweep " in result.stdout and best.run_id in result.stdout
    # The styles are bit-identical by design: one line says so, and the summary lists the
    # configuration once (its best standing for the other), never as a tie.
    assert "style changes no number: its 2 values (custom_loop, functional)" in result.stdout
    assert "tied with" not in result.stdout and result.stdout.count("FINISHED  ") == 1

    # A process that died mid-run left an attempt RUNNING (no one could close it): its
    # heartbeat stopped long ago. Another process is training a configuration right now: its
    # heartbeat is fresh. (Made with MLflow's client: this process must not beat for them.)
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("vaelab").experiment_id
    child = {**{k: best.tags[k] for k in ("sweep.id", "config_hash")}, "sweep.role": "child"}
    dead = client.create_run(experiment, tags={**child, "heartbeat_at": str(time.time() - 900)})
    live = client.create_run(
        experiment, tags={**child, "config_hash": "another", "heartbeat_at": str(time.time())}
    )
    # Launching the same sweep again trains nothing (every configuration FINISHED), marks the
    # dead attempt KILLED (superseded by the finished one, so the sweep succeeds) and leaves
    # the live one alone: the sweep's parent stays open for the process that runs it.
    again = run_app(*grid)
    assert again.returncode == 0, again.stderr[-3000:]
    assert output(again).count("Skipping: this configuration already FINISHED") == 2
    assert "1 stale RUNNING runs marked KILLED" in output(again)
    assert "1 run(s) still training in another process" in output(again)
    runs = {r.run_id: r for r in sweep_runs(store_uri)}
    assert runs[dead.info.run_id].status == "KILLED" and runs[dead.info.run_id].tags["stale"]
    assert "no heartbeat for 9" in runs[dead.info.run_id].tags["error"]
    assert runs[live.info.run_id].status == "RUNNING" and "stale" not in runs[live.info.run_id].tags
    (parent,) = sweep_runs(store_uri, "parent")
    assert parent.tags["sweep.count.superseded"] == "1" and parent.status == "RUNNING"


def test_a_failing_run_is_recorded_and_the_sweep_goes_on_then_exits_non_zero(run_app, store_uri):
    result = run_app(
        "train.py",
        "--multirun",
        *TINY,
        "loss=notebook_functional",
        "train.learning_rate=0.001,1e12",
    )
    assert result.returncode != 0
    children = sweep_runs(store_uri)
    by_lr = {r.params["train.learning_rate"]: r for r in children}
    assert by_lr["1000000000000.0"].status == "FAILED"
    assert "non-finite loss at epoch 1" in by_lr["1000000000000.0"].tags["error"]
    assert by_lr["0.001"].status == "FINISHED"
    assert "1 run(s) of sweep" in output(
        result
    ) and "train.learning_rate=1000000000000.0" in output(result)
    (parent,) = sweep_runs(store_uri, "parent")
    assert parent.status == "FAILED" and parent.tags["sweep.count.failed"] == "1"


@pytest.mark.long
def test_parallel_workers_lose_nothing_in_a_fresh_store_and_an_error_spares_the_others(
    run_app, store_uri
):
    # 2 worker processes, 2 runs, both starting against a store that does not exist yet;
    # one run's loss turns NaN in its worker.
    result = run_app(
        "train.py",
        "--multirun",
        *TINY,
        "train.epochs=2",
        "data.train_limit=128",
        "train.learning_rate=0.001,1e12",
        "loss=notebook_functional",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
    )
    assert result.returncode != 0  # the sweep reports its failed run
    children = sweep_runs(store_uri)
    by_status = sorted((r.status, r.params["train.learning_rate"]) for r in children)
    assert by_status == [("FAILED", "1000000000000.0"), ("FINISHED", "0.001")]
    client = MlflowClient(store_uri)
    for run in children:
        if run.status == "FINISHED":
            for name in ("train/total", "val/kl"):
                assert [m.step for m in client.get_metric_history(run.run_id, name)] == [1, 2]


def test_optuna_preset_runs_the_requested_trials(run_app, store_uri, tmp_path):
    result = run_app("train.py", "--multirun", *TINY, "sweep=optuna", "hydra.sweeper.n_trials=1")
    assert result.returncode == 0, result.stderr[-3000:]
    children = sweep_runs(store_uri)
    assert len(children) == 1 and all(r.status == "FINISHED" for r in children)
    assert "Best trial" in output(result)
    # Two more trials were asked meanwhile: one by a live process (its heartbeat fresh), one
    # by a process that died (its heartbeat an hour old).
    url = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=20, grace_period=90)
    (summary,) = optuna.get_all_study_summaries(url)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    live, dead = study.ask(), study.ask()
    for trial in (live, dead):
        storage.record_heartbeat(trial._trial_id)
    with sqlite3.connect(tmp_path / "mlruns" / "optuna.db") as db:
        db.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour') "
            "WHERE trial_id = ?",
            (dead._trial_id,),
        )
    # The study is persistent: asking for 2 trials runs exactly one more. The dead trial is
    # failed; the live one is left to its process.
    more = run_app("train.py", "--multirun", *TINY, "sweep=optuna", "hydra.sweeper.n_trials=2")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "1 of 2 trials done" in output(more)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[live.number] == optuna.trial.TrialState.RUNNING
    assert states[dead.number] == optuna.trial.TrialState.FAIL
    # Two completed trials in the study; TPE may propose a configuration twice, which the
    # sweep then reuses instead of training again: one run per distinct configuration.
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    param = {"style": "style.name"}  # a config group's choice is logged as its name
    configurations = {
        tuple(sorted((param.get(k, k), str(v)) for k, v in t.params.items())) for t in trials
    }
    children = sweep_runs(store_uri)
    assert len(children) == len(configurations)
    for configuration in configurations:
        matching = [r for r in children if all(r.params[k] == v for k, v in configuration)]
        assert len(matching) == 1, configuration


@pytest.mark.long
def test_a_slurm_sweep_runs_for_real_through_submitits_local_executor(run_pipeline, store_uri):
    # hydra/launcher=slurm hands each job to submitit; its local executor runs the same path
    # on this machine (a process per job, as a cluster node would), into the same store. In a
    # process of its own: submitit takes over the console streams of the process it runs in.
    result = run_pipeline(
        "train.py",
        "--multirun",
        *TINY,
        "seed=1,2",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    assert result.returncode == 0, output(result)[-3000:]
    children = sweep_runs(store_uri)
    assert sorted(r.params["seed"] for r in children) == ["1", "2"]
    assert {r.status for r in children} == {"FINISHED"}
    (parent,) = sweep_runs(store_uri, "parent")
    assert "submitit" in parent.tags["sweep.launcher"] and parent.status == "FINISHED"


@pytest.mark.parametrize("objective", ["test/total", "val/kl"])
def test_a_sweep_tuned_on_the_test_set_or_the_kl_is_refused_before_any_run(
    run_app, tmp_path, objective
):
    result = run_app("train.py", "--multirun", *TINY, f"objective={objective}", "seed=1,2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert line.startswith(f"Error: cannot start the sweep: objective='{objective}': ")
    assert "use one of val/total, val/reconstruction" in line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # no parent, no child


def test_a_relaunch_after_an_edit_to_the_code_trains_again(run_app, store_uri, monkeypatch):
    # The same commit, other code on disk (an uncommitted edit): a finished configuration is
    # not this code's result, so the relaunch trains it again and records which code did.
    sweep = ["train.py", "--multirun", *TINY, "seed=1"]
    assert run_app(*sweep).returncode == 0
    monkeypatch.setattr(provenance, "source_hash", lambda: "e" * 64)
    again = run_app(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Skipping" not in output(again)
    runs = sweep_runs(store_uri)
    assert len(runs) == 2 and {r.status for r in runs} == {"FINISHED"}
    assert len({r.tags["config_hash"] for r in runs}) == 2
    assert "e" * 64 in {r.tags["code.sha256"] for r in runs}


def test_the_code_hash_covers_an_uncommitted_edit_to_any_source_file(tmp_path):
    src = tmp_path / "src"
    for package in ("vaelab", "hydra_plugins"):
        shutil.copytree(
            REPO / "src" / package, src / package, ignore=ignore_patterns("__pycache__")
        )
    probe = (
        f"import sys; sys.path.insert(0, {str(src)!r}); "
        "from vaelab.edges import provenance; print(provenance.source_hash())"
    )

    def code_hash() -> str:
        return subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()

    before = code_hash()
    plugin = src / "hydra_plugins" / "vaelab_packed_launcher" / "packed_launcher.py"
    plugin.write_text(plugin.read_text() + "\n# an uncommitted edit\n")
    assert re.fullmatch(r"[0-9a-f]{64}", before) and code_hash() != before


@pytest.mark.parametrize(
    "setting, says",
    [
        ("hydra/launcher=packed hydra.launcher.max_group_size=0", "max_group_size=0 is invalid"),
        ("hydra/launcher=packed hydra.launcher.memory_fraction=7", "memory_fraction=7.0 is inv"),
        ("sweep=optuna hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 is invalid"),
    ],
)
def test_a_plugin_setting_out_of_range_is_one_line_and_trains_nothing(
    run_app, store_uri, setting, says
):
    result = run_app("train.py", "--multirun", *TINY, "seed=1,2", *setting.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert "refused the sweep; nothing trained" in line and says in line
    assert sweep_runs(store_uri) == []
    (parent,) = sweep_runs(store_uri, "parent")
    assert parent.status == "FAILED" and says in parent.tags["error"]


@pytest.mark.parametrize(
    "setting", ["hydra.launcher.memory_fractio=0.3", "hydra.launcher.max_group_size=abc"]
)
def test_a_plugin_setting_with_a_typo_or_a_wrong_type_fails_at_composition(run_app, setting):
    result = run_app("train.py", "--multirun", *TINY, "hydra/launcher=packed", setting)
    assert result.returncode == 1 and setting.split("=")[0].split(".")[-1] in result.stderr


def test_hydra_imports_the_optuna_sweeper_without_optuna():
    # Hydra imports every plugin module at every command: a sweeper's heavy imports wait.
    probe = (
        "import sys, hydra_plugins.vaelab_optuna_sweeper.optuna_sweeper; "
        "print('optuna' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr


@pytest.mark.long
def test_a_pruned_sweep_stops_bad_runs_early_never_ranks_them_and_keeps_them_stopped(
    run_app, store_uri, tmp_path
):
    sweep = [
        "train.py", "--multirun", *TINY, "train.epochs=3", "seed=1,2,3,4,5,6",
        "sweep.pruner=successive_halving", "sweep.pruner_reduction_factor=3",
    ]  # fmt: skip
    result = run_app(*sweep)
    assert result.returncode == 0, output(result)[-3000:]
    runs = sweep_runs(store_uri)
    pruned = [r for r in runs if "pruned_at_epoch" in r.tags]
    assert pruned and len(pruned) < len(runs)
    store = tracking.open_store(store_uri, "vaelab")
    for run in pruned:  # stopped at a rung (epoch 1), its numbers up to there, no test ones
        epoch = int(run.tags["pruned_at_epoch"])
        assert epoch == 1 and run.status == "FINISHED" and "test/total" not in run.metrics
        assert [s for s, _ in tracking.metric_history(store, run.run_id, "val/total")] == [1]
    (parent,) = sweep_runs(store_uri, "parent")
    assert parent.tags["sweep.count.pruned"] == str(len(pruned))
    assert parent.tags["sweep.best_run_id"] not in {r.run_id for r in pruned}
    assert f"{len(pruned)} pruned" in output(result)
    # A relaunch retrains nothing: pruned configurations stay stopped.
    again = run_app(*sweep)
    assert again.returncode == 0 and output(again).count("Skipping") == 6
    # The report lists them apart, unranked.
    report = make_report(
        compose_config(*isolated(tmp_path), f"out_dir={tmp_path}/reports", name="report")
    )
    table = pd.read_csv(report["csv"]).set_index("run_id")
    assert (table.loc[[r.run_id for r in pruned], "status"] == "PRUNED").all()
    assert table.loc[[r.run_id for r in pruned], "rank"].isna().all()
    assert "pruned" in report["md"].read_text()


def test_a_run_the_pruner_stops_is_recorded_pruned_and_the_sweeper_is_told(run_app, store_uri):
    # Two runs in order; the second barely learns (learning rate 1e-6): at the first rung it
    # is not in the best third of those seen, and successive halving stops it there.
    result = run_app(
        "train.py", "--multirun", *TINY, "train.epochs=2", "train.learning_rate=0.001,0.000001",
        "sweep.pruner=successive_halving",
    )  # fmt: skip
    assert result.returncode == 0, output(result)[-3000:]
    runs = {r.params["train.learning_rate"]: r for r in sweep_runs(store_uri)}
    assert "pruned_at_epoch" not in runs["0.001"].tags and "test/total" in runs["0.001"].metrics
    slow = runs["1e-06"]
    assert slow.tags["pruned_at_epoch"] == "1" and "test/total" not in slow.metrics
    assert "1 pruned" in output(result)
    # The pruning study holds one trial per run, told what became of it.
    journal = pruning.storage(
        f"{store_uri.removeprefix('sqlite:///').rsplit('/', 1)[0]}/optuna.journal"
    )
    (summary,) = optuna.get_all_study_summaries(journal)
    trials = optuna.load_study(study_name=summary.study_name, storage=journal).get_trials()
    states = {t.number: t.state.name for t in trials}
    assert states[int(slow.tags["prune.trial"])] == "PRUNED"
    assert states[int(runs["0.001"].tags["prune.trial"])] == "COMPLETE"


def test_only_a_launcher_that_composes_every_job_first_skips_the_sweepers_composition():
    # Hydra's sweeper composes a batch to check it; the packed launcher composes and checks
    # every job before any trains, so the sweeper's pass (100 ms a job) is skipped for it.
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    from hydra_plugins.vaelab_basic_sweeper.basic_sweeper import skips_composition
    from hydra_plugins.vaelab_packed_launcher.packed_launcher import PackedLauncher

    assert skips_composition(PackedLauncher) and not skips_composition(BasicLauncher)
