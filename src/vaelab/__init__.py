"""vaelab: variational autoencoders on MNIST, configured by Hydra, tracked in MLflow.

The Python interface (vaelab.api; the README's "From Python"):

    import vaelab
    frame = vaelab.runs()                      # the latest sweep, one row per run
    table = vaelab.configs()                   # one row per configuration: mean, 95% interval
    curves = vaelab.history(frame)             # per-epoch values, one row per run/metric/epoch
    vae = vaelab.load_model(frame.run_id[0])   # the trained Keras VAE
    result = vaelab.train(vaelab.compose(["model.latent_dim=8", "train.epochs=2"]))
    paths = vaelab.report()                    # report.html of the latest sweep

`import vaelab` is instant: each name loads its module when first used, and no
deep-learning framework is imported until a model is trained or loaded.

The layers, top to bottom (docs/design.md): orchestration, rules, engines, vae, vocab;
edges beside them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compose", "configs", "history", "load_model", "report", "runs", "train"]


def __getattr__(name: str) -> Any:
    """Import vaelab.api (pandas, Hydra) on first use of one of its names, not on import."""
    if name in __all__:
        from vaelab import api

        return getattr(api, name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
