"""The Python interface (vaelab.api) against a real sweep in a real store, and the notebook.

One smoke sweep (two configurations, two epochs, with models) is trained once for the module
by the real Hydra app; every value the API returns is checked against what MLflow returns.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import nbformat
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient

import vaelab
from tests.conftest import REPO, TINY, app_in, isolated
from vaelab.vocab.errors import ConfigError, ReportError

SWEEP = [*TINY[:-1], "train.epochs=2", "model.latent_dim=2,4", "sweep.register_best=true"]
NOTEBOOK = REPO / "docs" / "examples" / "sweep_analysis.ipynb"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A VAELAB_HOME whose store holds one finished smoke sweep of two runs."""
    root = tmp_path_factory.mktemp("home")
    done = app_in(root)("train.py", "--multirun", *SWEEP)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture
def store(home):
    return f"sqlite:///{home}/mlruns/mlflow.db"


def test_runs_are_what_mlflow_returns_with_group_rank_and_filters(store):
    frame = vaelab.runs(store=store)
    assert len(frame) == 2 and frame.attrs["sweep_id"]
    assert list(frame.columns[:5]) == ["run_id", "run_name", "status", "group", "rank"]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("vaelab").experiment_id
    stored = mlflow.search_runs([experiment], filter_string="tags.`sweep.role` = 'child'")
    stored = stored.set_index("run_id").loc[frame["run_id"]]
    for column in [c for c in frame if c.startswith(("params.", "metrics."))]:
        assert frame[column].tolist() == stored[column].tolist(), column
    assert frame["status"].tolist() == ["FINISHED", "FINISHED"]
    assert sorted(frame["rank"].tolist()) == [1, 2] and frame["group"].nunique() == 1
    assert frame["metrics.val/total"].is_monotonic_increasing  # ranked: best first
    # Params are what a run computes: no machine locations among them.
    assert not [c for c in frame if c.startswith(("params.paths.", "params.tracking."))]
    (two,) = vaelab.runs(store=store, latent_dim=2)["params.model.latent_dim"]
    assert two == "2"
    with pytest.raises(ValueError, match="no param or column 'latnet_dim'.*model.latent_dim"):
        vaelab.runs(store=store, latnet_dim=2)
    with pytest.raises(ReportError, match="sweep_id=nope has no runs"):
        vaelab.runs("nope", store=store)


def test_history_is_every_epoch_mlflow_logged(store):
    frame = vaelab.runs(store=store)
    curves = vaelab.history(frame, metrics=["val/total", "train/kl"])
    assert len(curves) == 2 * 2 * 2  # runs x metrics x epochs
    client = MlflowClient(store)
    for (run_id, name), rows in curves.groupby(["run_id", "metric"]):
        logged = [(m.step, m.value) for m in client.get_metric_history(run_id, name)]
        assert list(zip(rows["epoch"], rows["value"], strict=True)) == logged
    assert set(curves["run_name"]) == set(frame["run_name"])


def test_a_loaded_model_encodes_and_decodes_as_the_run_measured(store, home):
    best = vaelab.runs(store=store).iloc[0]
    vae = vaelab.load_model(best["run_id"], store=store)
    digits = np.random.default_rng(0).uniform(size=(3, 784)).astype("float32")
    z_mean, z_log_var = vae.get_layer("encoder")(digits)
    assert z_mean.shape == (3, int(best["params.model.latent_dim"]))
    pixels = np.asarray(vae.get_layer("decoder")(z_mean))
    assert pixels.shape == (3, 784) and pixels.min() >= 0 and pixels.max() <= 1
    np.testing.assert_allclose(np.asarray(vae(digits)), pixels, rtol=1e-6)


def test_a_logged_model_loads_in_a_python_that_never_imports_vaelab(store):
    model_id = (
        MlflowClient(store)
        .search_logged_models([MlflowClient(store).get_experiment_by_name("vaelab").experiment_id])[
            0
        ]
        .model_id
    )
    probe = f"""
import json, sys, numpy as np, mlflow
mlflow.set_tracking_uri({store!r})
x = np.random.default_rng(0).uniform(size=(2, 784)).astype("float32")
keras_model = mlflow.keras.load_model("models:/{model_id}")
pyfunc_model = mlflow.pyfunc.load_model("models:/{model_id}")
a = np.asarray(keras_model(x))
b = np.asarray(pyfunc_model.predict(x))
ours = [m for m in sys.modules if m.startswith("vaelab")]
print(json.dumps([a.shape, float(abs(a - b).max()), ours]))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env,
        cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    shape, difference, modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert shape == [2, 784] and modules == []
    # Two libraries' paths through the same weights (a Keras call, pyfunc's predict) may run
    # different CPU kernels (oneDNN picks them by instruction set): pixel probabilities in
    # [0, 1] agree to 1e-6, a few float32 steps at 1 (1.2e-7 measured on an AMD EPYC).
    assert float(difference) <= 1e-6


def test_compose_and_train_record_a_run_like_any_other(store, home, monkeypatch):
    monkeypatch.setenv("VAELAB_HOME", str(home))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    with pytest.raises(ConfigError, match="model.latent_dim"):
        vaelab.compose(["model.latent_dim=0"])
    overrides = [*TINY, "seed=7", "tracking.system_metrics=true", f"paths.data_dir={REPO}/data"]
    config = vaelab.compose([*overrides, *isolated(home)])
    assert config.seed == 7 and config.train.epochs == 1
    result = vaelab.train(config)
    every = vaelab.runs("all", store=store)
    (row,) = every[every["run_id"].eq(result.run_id)].to_dict("records")
    assert row["status"] == "FINISHED" and row["params.seed"] == "7"
    assert row["metrics.val/total"] == result.metrics["val/total"]
    # tracking.system_metrics=true: MLflow's own system metrics beside the run's.
    assert row["metrics.system/cpu_utilization_percentage"] >= 0
    assert row["metrics.system/system_memory_usage_megabytes"] > 0


def test_a_sweep_registers_the_best_model_of_its_group(store):
    frame = vaelab.runs(store=store)
    best = frame[frame["rank"].eq(1)].iloc[0]
    (version,) = MlflowClient(store).search_model_versions("name = 'vaelab'")
    assert version.run_id == best["run_id"] and version.tags["sweep.id"] == frame.attrs["sweep_id"]
    assert version.source.startswith("models:/") and f"run {best['run_id']}" in version.description


def test_report_writes_the_pipelines_report(store, home, monkeypatch):
    paths = vaelab.report(store=store, out_dir=str(home / "reports"))
    html = Path(paths["html"]).read_text()
    assert Path(paths["html"]).parent.parent == home / "reports"
    assert "Runs ranked by val/total" in html


_QUIET_IMPORT = """
import os, sys
before = os.fstat(2)
import vaelab
frame = vaelab.runs(store=sys.argv[1])
after = os.fstat(2)
heavy = sorted(m for m in ("tensorflow", "jax", "keras", "torch") if m in sys.modules)
try:
    vaelab.runs("nope", store=sys.argv[1])
except Exception as error:
    caught = type(error).__name__
print(len(frame), heavy, (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev), caught)
"""


def test_the_api_imports_no_framework_keeps_fd_2_and_raises_rather_than_exits(store):
    done = subprocess.run(
        [sys.executable, "-c", _QUIET_IMPORT, store],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "2 [] True ReportError"


@pytest.mark.long  # a Jupyter kernel of its own running a sweep: 11 s of `make test`'s 5 min
def test_the_notebook_runs_on_the_sweep(home, monkeypatch, keep_dir):
    monkeypatch.setenv("VAELAB_HOME", str(home))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute(cwd=str(home))
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs)
    assert len(figures) == 2, "the validation curves and the decoded grid"
    assert "sweep " in text and "best: " in text and "decoded 81 latent points" in text
    nbformat.write(notebook, keep_dir / "sweep_analysis.ipynb")
