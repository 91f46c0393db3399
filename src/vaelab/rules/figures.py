"""A run's figures by artifact path, drawn from what its engine measured.

Drawn on the main thread (matplotlib wants one), as PNG bytes that the recorder's writer
threads then log; `vae.plots` draws, this module says which figures a run has and where.
"""

from __future__ import annotations

from collections.abc import Mapping

from vaelab.edges import config as config_schema
from vaelab.edges.config import Config
from vaelab.vae import plots
from vaelab.vae.plots import Pictures
from vaelab.vocab import metrics


def run_figures(
    config: Config, pictures: Pictures, history: Mapping[str, list[float]]
) -> dict[str, object]:
    """The run's figures by artifact path, their units those of the run's loss."""
    kind = metrics.loss_kind(config_schema.flatten(config))
    return {
        "plots/reconstructions.png": plots.reconstruction_grid(
            pictures.originals, pictures.reconstructions
        ),
        "plots/prior_samples.png": plots.image_grid(
            pictures.prior_samples, "Samples from the prior"
        ),
        "plots/latent_map.png": plots.latent_map(pictures.z_mean, pictures.labels),
        "plots/loss_curves.png": plots.loss_curves(history, kind),
    }


def run_pngs(
    config: Config, pictures: Pictures, history: Mapping[str, list[float]]
) -> dict[str, bytes]:
    """The run's figures as PNG files, ready for a writer thread."""
    figures = run_figures(config, pictures, history)
    return {path: plots.png_bytes(figure) for path, figure in figures.items()}
