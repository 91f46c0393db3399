"""A run's figures, as PNG bytes; the caller decides where they go (MLflow, a report, a test).

Every run of a sweep draws them, so they are made to be cheap: digit grids are one image
drawn with Pillow (no axes to lay out), and the two charts use matplotlib's `Figure` directly
(no pyplot, no global figure registry) with fixed axes positions instead of a layout engine,
which costs more than the drawing itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from vaelab.vocab import metrics
from vaelab.vocab.metrics import EPOCH_SPLITS, TERMS

_SIDE = 28
_ZOOM = 2  # digits drawn at 56 x 56 pixels
_DPI = 80
_LABEL_WIDTH = 52
_TITLE_HEIGHT = 18


@dataclass(frozen=True)
class Pictures:
    """The arrays behind a run's figures."""

    originals: np.ndarray
    reconstructions: np.ndarray
    prior_samples: np.ndarray
    z_mean: np.ndarray
    labels: np.ndarray


def mosaic(rows: list[np.ndarray]) -> np.ndarray:
    """Digits laid side by side, one row per array, as a single image."""
    return np.vstack([np.hstack([d.reshape(_SIDE, _SIDE) for d in row]) for row in rows])


def _digits_png(image: np.ndarray, title: str, row_labels: list[str]) -> bytes:
    """A grey mosaic in [0, 1] with a title above and a label before each row."""
    pixels = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    digits = Image.fromarray(pixels).resize(
        (pixels.shape[1] * _ZOOM, pixels.shape[0] * _ZOOM), Image.NEAREST
    )
    left = _LABEL_WIDTH if any(row_labels) else 4
    canvas = Image.new("L", (digits.width + left + 4, digits.height + _TITLE_HEIGHT + 4), 255)
    canvas.paste(digits, (left, _TITLE_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    draw.text((left, 3), title, fill=0)
    row_height = _SIDE * _ZOOM
    for index, label in enumerate(row_labels):
        draw.text((4, _TITLE_HEIGHT + index * row_height + row_height // 2 - 5), label, fill=0)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray) -> bytes:
    """Test digits (top row) above their reconstructions (bottom row)."""
    return _digits_png(
        mosaic([originals, reconstructions]),
        "Test digits and their reconstructions",
        ["input", "recon."],
    )


def image_grid(images: np.ndarray, title: str) -> bytes:
    """Digits in a square-ish grid, e.g. decoded samples from the prior."""
    cols = int(np.ceil(np.sqrt(len(images))))
    padded = np.concatenate([images, np.zeros((-len(images) % cols, images.shape[1]))])
    rows = [padded[i : i + cols] for i in range(0, len(padded), cols)]
    return _digits_png(mosaic(rows), title, [""] * len(rows))


def project_2d(points: np.ndarray) -> tuple[np.ndarray, str]:
    """The latent means themselves when 2-D, else their first two principal components."""
    if points.shape[1] == 2:
        return points, "z"
    if points.shape[1] == 1:
        return np.column_stack([points[:, 0], np.zeros(len(points))]), "z"
    centred = points - points.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T, "PC"


def latent_map(z_mean: np.ndarray, labels: np.ndarray) -> Figure:
    """Posterior means of test digits, coloured by their label."""
    xy, axis_name = project_2d(z_mean)
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.add_axes((0.13, 0.12, 0.66, 0.8))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
    fig.colorbar(scatter, cax=fig.add_axes((0.83, 0.12, 0.03, 0.8)), ticks=range(10), label="digit")
    ax.set_xlabel(f"{axis_name}1")
    ax.set_ylabel(f"{axis_name}2")
    ax.set_title(f"Latent means of {len(labels)} test digits", fontsize=10)
    return fig


def epoch_axis(ax: Axes, epochs: Iterable[int]) -> None:
    """An x axis of whole epochs, also for a run of one epoch.

    Matplotlib's integer ticks need two whole numbers in view; around a single point it
    falls back to ticks such as 0.98, 1.00, 1.02.
    """
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs = list(epochs)
    if epochs and min(epochs) == max(epochs):
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)


def term_label(term: str, kind: str) -> str:
    """What a loss term is and its unit, for an axis that shows it on every split.

    `metrics.label` names a split's metric ("train −ELBO on intensities (nats)"); the split
    is said by the legend here, so it is left out.
    """
    split = EPOCH_SPLITS[0]
    return metrics.label(metrics.name(split, term), kind).removeprefix(f"{split} ")


def loss_curves(history: Mapping[str, list[float]], kind: str = metrics.OTHER_LOSS) -> Figure:
    """Train and validation curves of each term, so the KL / reconstruction split is visible.

    `kind` (`metrics.loss_kind` of the run's params) says what the numbers are, so the y
    axes read nats where they are nats; without it they read loss units (KL: nats).
    """
    fig = Figure(figsize=(4 * len(TERMS), 3))
    width = 0.9 / len(TERMS)
    for index, term in enumerate(TERMS):
        ax = fig.add_axes((0.07 + index * width, 0.17, width - 0.08, 0.72))
        epochs: list[int] = []
        for split, style in zip(EPOCH_SPLITS, ("-o", "--s"), strict=True):
            values = history.get(metrics.name(split, term), [])
            epochs += range(1, len(values) + 1)
            ax.plot(range(1, len(values) + 1), values, style, label=split, markersize=3)
        ax.set_title(term, fontsize=10)
        epoch_axis(ax, epochs)
        ax.set_ylabel(term_label(term, kind), fontsize=8)
        ax.legend(fontsize=8)
    return fig


def png_bytes(figure: Figure | bytes, dpi: int = _DPI) -> bytes:
    """A figure as PNG bytes (a digit grid already is)."""
    if isinstance(figure, bytes):
        return figure
    buffer = io.BytesIO()
    # zlib's fastest level: a quarter of the encoding time for files ~10% larger.
    figure.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def save(figure: Figure | bytes, path) -> None:
    path.write_bytes(png_bytes(figure))
