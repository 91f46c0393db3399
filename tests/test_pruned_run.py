"""A run the sweep's pruner stopped says so where the MLflow UI shows runs."""

from mlflow.tracking import MlflowClient

from tests.conftest import TINY
from vaelab.edges import tracking
from vaelab.vocab.tags import CHILD, SWEEP_ID, SWEEP_ROLE


def test_a_pruned_run_says_so_in_its_name_and_description(run_app, store_uri):
    # Two runs in order; the second barely learns (learning rate 1e-6): successive halving
    # stops it at the first rung. MLflow shows it FINISHED, like a whole run.
    result = run_app(
        "train.py", "--multirun", *TINY, "train.epochs=2", "train.learning_rate=0.001,0.000001",
        "sweep.pruner=successive_halving",
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    store = tracking.open_store(store_uri, "vaelab")
    children = tracking.find_runs(store, {SWEEP_ROLE: CHILD})
    runs = {r.params["train.learning_rate"]: r for r in children}
    pruned, whole = runs["1e-06"], runs["0.001"]
    assert pruned.tags["pruned_at_epoch"] == "1" and pruned.status == "FINISHED"
    client = MlflowClient(store_uri)
    info = client.get_run(pruned.run_id).info
    assert info.run_name == "functional z=32 h=64 2ep elbo seed=1 pruned@1"
    assert pruned.tags["mlflow.runName"] == info.run_name
    sweep_id = pruned.tags[SWEEP_ID]
    assert pruned.tags["mlflow.note.content"] == (
        f"Pruned at epoch 1 of 2 by the successive_halving pruner (sweep {sweep_id}): its "
        "numbers are those of 1 epoch, not a whole run's; it has no test metrics and is "
        "never ranked."
    )
    # A run that went the whole way keeps its name and has no such note.
    assert client.get_run(whole.run_id).info.run_name == "functional z=32 h=64 2ep elbo seed=1"
    assert "mlflow.note.content" not in whole.tags
