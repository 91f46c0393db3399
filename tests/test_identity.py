"""One identity policy: the config hash, the sweep id, relocation and the report agree."""

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config, isolated
from vaelab.edges import tracking
from vaelab.edges.config import Config, as_dict, to_run_config
from vaelab.orchestration.report.tables import varying_params
from vaelab.orchestration.train import train_and_evaluate
from vaelab.rules import identity, lifecycle

# key -> (another value, is it a location?)
KEYS = {
    "paths.root": ("/elsewhere", True),
    "paths.mnist_dir": ("/elsewhere/mnist", True),
    "paths.store_dir": ("/elsewhere/mlruns", True),
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
def config() -> dict:
    return as_dict(to_run_config(compose_config()))


@pytest.mark.parametrize("key", KEYS)
def test_the_four_users_of_the_policy_agree_on_each_key(config, key):
    value, location = KEYS[key]
    assert identity.is_location(key) is location
    # 1. the config hash changes exactly when what the run computes changes
    changed = with_value(config, key, value)
    same_hash = identity.config_hash(config, "c0") == identity.config_hash(changed, "c0")
    assert same_hash is location
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
    context = lifecycle.start(store, "s1", {}, total=1, objective="val/total")
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
    runs = lifecycle.children(store, "s1")
    assert len(runs) == 2 and all(
        r.tags["mlflow.parentRunId"] == context.parent_run_id for r in runs
    )
