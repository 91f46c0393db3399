"""`hydra/launcher=packed` from the command line: the same sweep lifecycle as any launcher."""

import signal
import subprocess
import sys
import time

from tests.conftest import REPO, TINY, isolated
from vaelab import lifecycle, tracking

PACKED = "hydra/launcher=packed"


def children(store_uri):
    return lifecycle.children(
        tracking.open_store(store_uri, "vaelab"),
        tracking.find_runs(tracking.open_store(store_uri, "vaelab"), {"sweep.role": "parent"})[
            0
        ].tags["sweep.id"],
    )


def test_a_packed_sweep_is_one_parent_with_a_run_per_configuration_and_resumes(
    run_app, store_uri, tmp_path
):
    sweep = ["train.py", "--multirun", *TINY, "model.latent_dim=2,3", "seed=1,2", PACKED]
    result = run_app(*sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = children(store_uri)
    assert len(runs) == 4 and {r.status for r in runs} == {"FINISHED"}
    assert {r.tags["engine"] for r in runs} == {"packed"}
    assert len({r.tags["pack.group"] for r in runs}) == 1
    (parent,) = tracking.find_runs(
        tracking.open_store(store_uri, "vaelab"), {"sweep.role": "parent"}
    )
    assert parent.status == "FINISHED" and parent.tags["sweep.count.finished"] == "4"
    assert "packed_launcher.PackedLauncher" in parent.tags["sweep.launcher"]
    # Each job has its Hydra job directory, as with any launcher.
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    again = run_app(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("Skipping: this configuration already FINISHED") == 4
    assert len(children(store_uri)) == 4


def test_a_bad_configuration_refuses_the_whole_sweep_before_anything_trains(run_app, store_uri):
    result = run_app("train.py", "--multirun", *TINY, "model.latent_dim=2,0,-1", PACKED)
    assert result.returncode == 1
    assert "refused the sweep; nothing trained" in result.stderr
    assert "model.latent_dim=0" in result.stderr and "model.latent_dim=-1" in result.stderr
    store = tracking.open_store(store_uri, "vaelab")
    assert tracking.find_runs(store, {"sweep.role": "child"}) == []
    (parent,) = tracking.find_runs(store, {"sweep.role": "parent"})
    assert parent.status == "FAILED" and "model.latent_dim=0" in parent.tags["error"]


def test_sigterm_marks_every_unfinished_run_of_the_group_killed(tmp_path, store_uri):
    command = [
        sys.executable,
        str(REPO / "pipelines/train.py"),
        "--multirun",
        "experiment=smoke",
        "data.train_limit=8192",
        "train.epochs=60",
        "tracking.log_model=false",
        "seed=1,2,3",
        PACKED,
        *isolated(tmp_path),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        runs = []
        if (tmp_path / "mlruns" / "mlflow.db").exists():
            store = tracking.open_store(store_uri, "vaelab")
            runs = tracking.find_runs(store, {"sweep.role": "child"})
        if runs and all(tracking.metric_history(store, r.run_id, "val/total") for r in runs):
            break
        time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    runs = tracking.find_runs(tracking.open_store(store_uri, "vaelab"), {"sweep.role": "child"})
    assert len(runs) == 3 and {r.status for r in runs} == {"KILLED"}, output[-3000:]
    assert all("SIGTERM" in r.tags["error"] for r in runs)
