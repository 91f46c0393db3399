"""Tests of what runs on JAX: packed sweeps and the JAX trainers (`KERAS_BACKEND=jax`)."""

import keras
import pytest

if keras.backend.backend() != "jax":  # pragma: no cover - guarded by tests/conftest.py
    pytest.skip("needs KERAS_BACKEND=jax", allow_module_level=True)
