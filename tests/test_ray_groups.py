"""What a packed group asks of a Ray cluster, and the settings that refuse a sweep before it.

Plain functions on hand-made values (`ray.nodes()`'s shape); the groups on a real two-node
cluster: tests/jax/test_ray_cluster.py (make test-long).
"""

from hydra_plugins.vaelab_packed_launcher.packed_launcher import jax_environment
from tests.conftest import TINY
from vaelab.edges import tracking
from vaelab.orchestration.ray_groups import RaySettings, node_budget, task_options

GIB = 2**30


def node(memory: float, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": 1.0, "memory": memory}}


def test_the_budget_is_a_share_of_the_largest_live_node():
    nodes = [node(8 * GIB), node(16 * GIB), node(64 * GIB, alive=False)]
    assert node_budget(0.5, nodes) == 8 * GIB  # the dead node's memory is gone
    assert node_budget(0.5, []) == 0  # no node: no group fits, none is planned


def test_a_group_asks_for_its_memory_its_cpus_a_gpu_where_there_are_gpus_and_retries():
    settings = RaySettings("auto", num_cpus=2.0, max_retries=3)
    env = jax_environment(settings.num_cpus)
    cpu = task_options(123_456_789, settings, gpus=False, worker_env=env)
    assert cpu["memory"] == 123_456_789 and cpu["num_cpus"] == 2.0 and cpu["num_gpus"] == 0
    assert cpu["max_retries"] == 3 and cpu["scheduling_strategy"] == "SPREAD"
    assert cpu["runtime_env"]["env_vars"] == {
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    assert task_options(1, settings, gpus=True, worker_env=env)["num_gpus"] == 1
    # Less than a CPU still trains on one device.
    assert jax_environment(0.5)["XLA_FLAGS"].endswith("=1")


def test_a_bad_ray_setting_refuses_the_sweep_in_one_line(run_app, store_uri):
    result = run_app(
        "train.py",
        "--multirun",
        *TINY,
        "seed=1,2",
        "hydra/launcher=packed",
        "hydra.launcher.ray.address=auto",
        "hydra.launcher.ray.num_cpus=0",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert "hydra.launcher.ray.num_cpus=0.0 is invalid" in line
    store = tracking.open_store(store_uri, "vaelab")
    (parent,) = tracking.find_runs(store, {"sweep.role": "parent"})
    assert parent.status == "FAILED"
    assert tracking.find_runs(store, {"sweep.role": "child"}) == []
