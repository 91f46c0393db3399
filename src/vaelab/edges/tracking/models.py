"""A run's Keras model into its LoggedModel: the one place that runs a model to log it.

Apart from the writer because it calls the model (for the signature) and works around
MLflow's keras flavour; the `Run` handle has it as a base (`KerasModelLogging`).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import Model, infer_signature


class KerasModelLogging:
    """What `Run` does with a Keras model; the run's id is `Run`'s."""

    run_id: str

    def log_keras_model(
        self, model: Any, model_id: str, example: Any, requirements: list[str]
    ) -> None:
        """The model's files into its LoggedModel (`create_logged_model`), which loads anywhere.

        Logged with an input example and the signature inferred from it, so the UI shows
        what goes in and comes out, and `mlflow models serve` can check a request. MLflow's
        own check of the example (`validate_serving_input`) is skipped: it reloads the model
        and runs Keras' `predict`, which prints a progress bar and, through tf.data's
        parallel map, a native "E0000 ... node_def_util.cc" line on every run's console; the
        signature comes from the same example through the same model, called here.
        """
        # A direct call, not predict(): no data pipeline (and no TensorFlow data-op noise).
        # Eager tensors of either backend convert with numpy: the store adapter needs no Keras.
        outputs = model(example)
        if isinstance(outputs, dict):
            outputs = {k: np.asarray(v) for k, v in outputs.items()}
        else:
            outputs = np.asarray(outputs)
        Model.log(
            artifact_path=None,
            model_id=model_id,
            flavor=_KERAS_FLAVOUR,
            model=model,
            run_id=self.run_id,
            signature=infer_signature(example, outputs),
            input_example=example,
            pip_requirements=requirements,
            validate_serving_input=False,
        )


def _save_keras_model(path: str, validate_serving_input: bool = True, **kwargs: Any) -> None:
    """mlflow.keras.save_model, into a directory that exists first.

    MLflow 3.17's keras flavour writes the input example before it creates the model's
    directory (FileNotFoundError: .../model/input_example.json). `Model.log` hands its own
    `validate_serving_input` on to the flavour, whose `save_model` does not take it.
    """
    import mlflow.keras  # imports Keras and its backend: only when a model is saved

    Path(path).mkdir(parents=True, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# What `Model.log` needs of a flavour: its name and `save_model`.
_KERAS_FLAVOUR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)
