"""Tests of what runs on JAX: packed sweeps and the JAX trainers (`KERAS_BACKEND=jax`)."""

import jax
import keras
import pytest

if keras.backend.backend() != "jax":  # pragma: no cover - guarded by tests/conftest.py
    pytest.skip("needs KERAS_BACKEND=jax", allow_module_level=True)


@pytest.fixture(scope="session", autouse=True)
def compiled_programs_are_shared(tmp_path_factory):
    """One persistent compilation cache for the session's workers: tests that train the same
    shapes compile them once (what `hydra/launcher=packed` does for a user's sweeps)."""
    shared = tmp_path_factory.getbasetemp().parent / "jax-compilation-cache"
    jax.config.update("jax_compilation_cache_dir", str(shared))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
