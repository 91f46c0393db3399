"""A run's figures by artifact path, drawn from what its engine measured.

Drawn as PNG bytes on one thread (matplotlib wants one: the recorder's drawing thread), which
the recorder's writer threads then log; `vae.plots` draws, this module says which figures a
run has and where. The loss curves need only the run's history, so they can be drawn while
the run is still being measured.
"""

from __future__ import annotations

from collections.abc import Mapping

from vaelab.edges import config as config_schema
from vaelab.edges.config import Config
from vaelab.vae import plots
from vaelab.vae.plots import Pictures
from vaelab.vocab import metrics


def picture_figures(pictures: Pictures) -> dict[str, object]:
    """The figures of what the run's model makes of digits: known once it is measured."""
    return {
        "plots/reconstructions.png": plots.reconstruction_grid(
            pictures.originals, pictures.reconstructions
        ),
        "plots/prior_samples.png": plots.image_grid(
            pictures.prior_samples, "Samples from the prior"
        ),
        "plots/latent_map.png": plots.latent_map(pictures.z_mean, pictures.labels),
    }


def curve_figures(config: Config, history: Mapping[str, list[float]]) -> dict[str, object]:
    """The loss curves: known once the run's last epoch has trained, before it is measured."""
    return {"plots/loss_curves.png": plots.loss_curves(history, _kind(config))}


def curves_shown(config: Config, history: Mapping[str, list[float]]) -> tuple:
    """What the loss curves show: runs with equal ones have the same figure."""
    return _kind(config), tuple(sorted((name, tuple(values)) for name, values in history.items()))


def _kind(config: Config) -> str:
    return metrics.loss_kind(config_schema.flatten(config))


def as_pngs(figures: Mapping[str, object]) -> dict[str, bytes]:
    """Figures as PNG files, ready for a writer thread."""
    return {path: plots.png_bytes(figure) for path, figure in figures.items()}
