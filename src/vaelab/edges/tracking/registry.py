"""The models runs logged: found by run, registered as versions of a named model, loaded back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException

from vaelab.edges.tracking.queries import get_run
from vaelab.edges.tracking.store import Store
from vaelab.vocab.errors import TrackingError


def logged_model_id(store: Store, run_id: str) -> str:
    """The id of the model a run logged (its newest, should it have several)."""
    found = store.client.search_logged_models(
        experiment_ids=[store.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
    )
    if not found:
        run = get_run(store, run_id)  # says so if the run itself is not in the store
        raise TrackingError(
            f"run {run_id} ({run.status}) logged no model: it did not finish, or it was "
            "trained with tracking.log_model=false"
        )
    return found[0].model_id


def register_version(
    store: Store, name: str, run_id: str, tags: Mapping[str, str], description: str
) -> str:
    """The run's logged model as a new version of registered model `name`; its number.

    The registered model is created on first use.
    """
    model_id = logged_model_id(store, run_id)
    client = store.client
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="The best run of a vaelab sweep's comparable group, per sweep."
        )
    version = client.create_model_version(
        name, f"models:/{model_id}", run_id=run_id, tags=dict(tags), description=description,
        model_id=model_id,
    )  # fmt: skip
    return str(version.version)


def load_logged_keras_model(store: Store, run_id: str) -> Any:
    """The Keras model a run logged, loaded through MLflow's keras flavour."""
    import mlflow.keras  # imports Keras and its backend: only when a model is loaded

    mlflow.set_tracking_uri(store.uri)
    return mlflow.keras.load_model(f"models:/{logged_model_id(store, run_id)}")
