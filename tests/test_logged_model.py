"""A run's LoggedModel carries what the Models view sorts and filters by."""

from mlflow.tracking import MlflowClient

from tests.conftest import TINY
from vaelab.edges import tracking
from vaelab.orchestration.train import train_and_evaluate


def test_the_logged_model_carries_the_objective_and_the_runs_params(smoke_cfg, store_uri):
    cfg = smoke_cfg(*TINY[1:-1], "train.epochs=2")  # with its model, as by default
    result = train_and_evaluate(cfg)
    client = MlflowClient(store_uri)
    store = tracking.open_store(store_uri, cfg.tracking.experiment)
    model = client.get_logged_model(tracking.logged_model_id(store, result.run_id))
    run = client.get_run(result.run_id)
    # The final epoch's validation numbers, the sweep's objective among them, on its data.
    linked = {m.key: m for m in model.metrics}
    for name in ("val/total", "val/reconstruction", "val/kl", "test/total"):
        assert linked[name].value == run.data.metrics[name], name
    assert linked["val/total"].step == 2 and linked["val/total"].dataset_name == "mnist"
    # ...logged against the model without a second point in the run's own history.
    history = client.get_metric_history(result.run_id, "val/total")
    assert [m.step for m in history] == [1, 2]
    # The run's params, which say what the model is.
    assert model.params["model.latent_dim"] == "32"
    assert model.params == run.data.params
