"""One identity policy: the config hash, the sweep id, relocation and the report agree."""

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, TINY, app_in, compose_config, isolated
from vaelab.edges import tracking
from vaelab.edges.config import Config, as_dict, flatten, to_run_config
from vaelab.orchestration.report.tables import varying_params
from vaelab.orchestration.train import train_and_evaluate
from vaelab.rules import identity
from vaelab.rules.lifecycle.children import children_of
from vaelab.rules.lifecycle.claims import holder, resumable
from vaelab.rules.lifecycle.parent import start_sweep
from vaelab.rules.naming import run_params
from vaelab.vocab.tags import (
    CODE_HASH,
    CONFIG_HASH,
    LOCATION_TAG_PREFIX,
    PARENT,
    SWEEP_ID,
    SWEEP_ROLE,
)

# key -> (another value, is it a location?): every paths.* key and every HOW key (a test
# checks that), and settings of the same sections that are not.
KEYS = {
    "paths.root": ("/elsewhere", True),
    "paths.data_dir": ("/elsewhere/data", True),
    "paths.output_dir": ("/elsewhere/outputs", True),
    "paths.mnist_dir": ("/elsewhere/mnist", True),
    "paths.mnist_source": ("/elsewhere/mnist.npz", True),
    "paths.store_dir": ("/elsewhere/mlruns", True),
    "train.checkpoint_every": (3, True),
    "train.checkpoints_kept": (5, True),
    "sweep.pruner_storage": ("/elsewhere/mlruns/optuna.journal", True),
    "sweep.register_best": (True, True),
    "sweep.seeds": (3, True),
    "sweep.pruner": ("median", False),
    "train.batch_size": (32, False),
    "tracking.uri": ("http://host:5000", True),
    "tracking.artifact_root": ("/elsewhere/artifacts", True),
    "tracking.run_name": ("mine", True),
    "force": (True, True),
    "model.latent_dim": (7, False),
    "model.intermediate_dim": (9, False),
    "loss.beta": (0.5, False),
    "data.validation_size": (100, False),
    "data.binarize": ("dynamic", False),
    "train.epochs": (9, False),
    "seed": (5, False),
}


def with_value(config: dict, key: str, value) -> dict:
    changed = OmegaConf.create(config)
    OmegaConf.update(changed, key, value)
    return OmegaConf.to_container(changed)


@pytest.fixture(scope="module")
def typed() -> Config:
    return to_run_config(compose_config())


@pytest.fixture(scope="module")
def config(typed) -> dict:
    """Nested, exactly as orchestration/train.py hashes it."""
    return as_dict(typed)


def test_the_table_names_every_path_and_every_how_key(typed):
    paths = {key for key in flatten(typed) if key.startswith("paths.")}
    assert paths | set(identity.HOW_KEYS) <= set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_the_five_users_of_the_policy_agree_on_each_key(config, typed, key):
    value, location = KEYS[key]
    assert identity.is_location(key) is location
    # 1. the config hash changes exactly when what the run computes changes
    changed = with_value(config, key, value)
    hashes = [identity.config_hash(c, "c0", "tensorflow") for c in (config, changed)]
    assert (hashes[0] == hashes[1]) is location
    # 2. the sweep id ignores exactly the locations among the overrides
    base = ["model.latent_dim=2,16"]
    same_sweep = identity.sweep_id("vaelab", "basic", base) == identity.sweep_id(
        "vaelab", "basic", [*base, f"{key}={value}"]
    )
    assert same_sweep is location
    # 3. a rerun takes this machine's locations and keeps everything else as recorded
    here = OmegaConf.create(with_value(config, key, value))
    relocated = identity.relocate(OmegaConf.create(config), here, Config)
    assert (OmegaConf.select(relocated, key) == value) is location
    # 4. a report never calls a location a varying parameter
    frame = pd.DataFrame({f"params.{key}": [str(OmegaConf.select(here, key)), "x"]})
    assert (varying_params(frame) == []) is location
    # 5. a run logs it as a param exactly when it is not a location (else as a config.* tag)
    params, tags = run_params(typed)
    assert (key in params) is not location
    assert (f"{LOCATION_TAG_PREFIX}{key}" in tags) is location


def test_the_backend_is_part_of_the_config_hash(config):
    tensorflow, jax = (identity.config_hash(config, "c0", b) for b in ("tensorflow", "jax"))
    assert tensorflow != jax and identity.config_hash(config, "c0", "jax") == jax


def test_launcher_and_group_overrides_are_read_by_their_key():
    assert identity.override_key("hydra/launcher=packed") == "hydra.launcher"
    assert identity.override_key("+tracking.uri=x") == "tracking.uri"
    assert identity.defining_overrides(
        ["hydra/launcher=packed", "tracking=server", "style=subclass", "force=true"]
    ) == ["style=subclass"]


def test_a_sweep_relaunched_from_another_root_with_the_same_store_trains_nothing(
    tmp_path, smoke_cfg
):
    store_dir = tmp_path / "mlruns"
    first_cfg = smoke_cfg("tracking.log_model=false")
    store = tracking.open_store(first_cfg.tracking.uri, "vaelab", first_cfg.tracking.artifact_root)
    context = start_sweep(store, "s1", {}, total=1, objective="val/total")
    first = train_and_evaluate(first_cfg, sweep=context)
    # Another checkout (paths.root), its own output dir, the same store and data cache.
    moved = compose_config(
        "experiment=smoke",
        "tracking.log_model=false",
        f"paths.root={tmp_path}/other-checkout",
        *isolated(tmp_path),
        f"paths.mnist_dir={first_cfg.paths.mnist_dir}",
    )
    assert moved.paths.root != first_cfg.paths.root and moved.paths.store_dir == str(store_dir)
    again = train_and_evaluate(moved, sweep=context)
    assert again.skipped and again.run_id == first.run_id
    assert again.metrics["val/total"] == first.metrics["val/total"]
    # force=true (a location too: the same sweep, the same configuration) trains it again.
    moved.force = True
    forced = train_and_evaluate(moved, sweep=context)
    assert not forced.skipped and forced.run_id != first.run_id
    runs = children_of(store, "s1")
    assert len(runs) == 2 and all(
        r.tags["mlflow.parentRunId"] == context.parent_run_id for r in runs
    )


def test_a_run_of_another_backend_is_neither_skipped_nor_resumed(smoke_cfg):
    cfg = smoke_cfg(*TINY)
    store = tracking.open_store(cfg.tracking.uri, "vaelab", cfg.tracking.artifact_root)
    context = start_sweep(store, "s1", {}, total=1, objective="val/total")
    first = train_and_evaluate(cfg, sweep=context)
    tags = tracking.get_run(store, first.run_id).tags
    here = tags["backend"]
    other = {"tensorflow": "jax", "jax": "tensorflow"}[here]
    code = tags[CODE_HASH]
    config = as_dict(to_run_config(cfg))
    hashes = {b: identity.config_hash(config, code, b) for b in (here, other)}
    assert tags[CONFIG_HASH] == hashes[here]  # the training path hashes its backend
    # FINISHED: it holds its configuration on its own backend only.
    assert holder(store, context, hashes[here]).run_id == first.run_id
    assert holder(store, context, hashes[other]) is None
    # KILLED: only its own backend resumes it (the other trains its own run).
    tracking.close_run(store, first.run_id, "KILLED")
    assert resumable(store, context, hashes[here], "solo").run_id == first.run_id
    assert resumable(store, context, hashes[other], "solo") is None


def test_a_finished_sweep_relaunched_from_another_home_trains_nothing(tmp_path, monkeypatch):
    """The real thing: another VAELAB_HOME (paths.root, paths.*, sweep.pruner_storage all
    differ), the same store named by tracking.uri."""
    first_home, second_home = tmp_path / "first", tmp_path / "second"
    sweep = ["--multirun", *TINY, "model.latent_dim=2,4", f"paths.mnist_dir={REPO}/data/mnist"]
    monkeypatch.setenv("VAELAB_HOME", str(first_home))
    assert app_in(first_home)("train.py", *sweep).returncode == 0
    store = tracking.open_store(f"sqlite:///{first_home}/mlruns/mlflow.db", "vaelab")
    (parent,) = tracking.find_runs(store, {SWEEP_ROLE: PARENT})
    sweep_id = parent.tags[SWEEP_ID]
    trained = sorted(r.run_id for r in children_of(store, sweep_id))
    monkeypatch.setenv("VAELAB_HOME", str(second_home))
    again = app_in(second_home)(
        "train.py",
        *sweep,
        f"tracking.uri=sqlite:///{first_home}/mlruns/mlflow.db",
        f"tracking.artifact_root={first_home}/mlruns/artifacts",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("Skipping: this configuration already FINISHED") == 2
    runs = children_of(store, sweep_id)
    assert sorted(r.run_id for r in runs) == trained and {r.status for r in runs} == {"FINISHED"}
    assert len(tracking.find_runs(store, {SWEEP_ROLE: PARENT})) == 1
