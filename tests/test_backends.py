"""The JAX backend (what the GPU machine has): every style trains and logs the same metrics.

Skipped where JAX is not installed (it is not in the CPU lock); run it with JAX on the path.
"""

import importlib.util
import os

import pytest

from tests.conftest import TINY
from vaelab import tracking

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed"
)


@pytest.mark.parametrize("style", ["functional", "subclass", "custom_loop"])
def test_every_style_trains_on_jax(style, run_pipeline, store_uri, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    result = run_pipeline("train.py", *TINY, f"style={style}", "train.epochs=2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (run,) = tracking.find_runs(tracking.open_store(store_uri, "vaelab", None), {})
    assert run.status == "FINISHED" and run.tags["backend"] == "jax"
    assert [
        s
        for s, _ in tracking.metric_history(
            tracking.open_store(store_uri, "vaelab", None), run.run_id, "val/kl"
        )
    ] == [1, 2]
