"""The configuration statistics read back from a real store: coverage of the 95% intervals.

Synthetic runs with known means are written into a real MLflow sqlite store as the children
of a sweep, and `vaelab.configs` reads them back: the whole path from the store to the
interval. About 2,600 runs: `make test-long`.
"""

import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import vaelab
from tests.test_replicates import SIMULATION_SEED, TRUE_SD

CONFIGURATIONS = 200
pytestmark = pytest.mark.long


def write_sweep(client: MlflowClient, experiment: str, sweep: str, seeds: int, rng) -> dict:
    """A finished sweep of CONFIGURATIONS configurations x `seeds` replicates; their means."""
    parent = client.create_run(experiment, tags={"sweep.id": sweep, "sweep.role": "parent"})
    truth = {str(h): 160.0 + 20.0 * rng.random() for h in range(CONFIGURATIONS)}
    for h, mean in truth.items():
        for seed in range(1, seeds + 1):
            run = client.create_run(experiment, run_name=f"h{h}-s{seed}")
            client.log_batch(
                run.info.run_id,
                metrics=[
                    Metric("val/total", mean + TRUE_SD * rng.standard_normal(), 0, 3),
                    Metric("val/active_units", 4.0, 0, 3),
                ],
                params=[
                    Param("model.intermediate_dim", h),
                    Param("seed", str(seed)),
                    Param("loss.name", "elbo"),
                ],
                tags=[
                    RunTag("sweep.id", sweep),
                    RunTag("sweep.role", "child"),
                    RunTag("config_hash", f"{h}-{seed}"),
                    RunTag("mlflow.parentRunId", parent.info.run_id),
                ],
            )
            client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return truth


@pytest.mark.parametrize("seeds", [3, 10])
def test_intervals_read_from_a_real_store_cover_the_true_means(tmp_path, seeds):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(store)
    experiment = client.create_experiment("vaelab", artifact_location=str(tmp_path / "art"))
    rng = np.random.default_rng(SIMULATION_SEED + seeds)
    truth = write_sweep(client, experiment, f"sim{seeds}", seeds, rng)
    table = vaelab.configs(f"sim{seeds}", store=store)
    assert len(table) == CONFIGURATIONS and set(table["n"]) == {seeds}
    assert all(len(ids) == seeds for ids in table["run_ids"])
    true_mean = table["params.model.intermediate_dim"].map(truth)
    covered = (table["ci_low"] <= true_mean) & (true_mean <= table["ci_high"])
    assert 0.93 <= covered.mean() <= 0.97
