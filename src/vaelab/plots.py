"""Figures returned as objects; the caller decides where they go (MLflow, a report, a test).

Figures are made with `matplotlib.figure.Figure` directly, not pyplot: no display, no global
figure registry to leak into, and nothing to close.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vaelab.metrics import EPOCH_SPLITS, TERMS

_SIDE = 28


@dataclass(frozen=True)
class Pictures:
    """The arrays behind a run's figures."""

    originals: np.ndarray
    reconstructions: np.ndarray
    prior_samples: np.ndarray
    z_mean: np.ndarray
    labels: np.ndarray


def mosaic(rows: list[np.ndarray]) -> np.ndarray:
    """Digits laid side by side, one row per array, as a single image.

    One `imshow` of a mosaic instead of a subplot per digit: the same picture, drawn about ten
    times faster, which matters when every run of a sweep draws two of them.
    """
    return np.vstack([np.hstack([d.reshape(_SIDE, _SIDE) for d in row]) for row in rows])


def _digits_figure(image: np.ndarray, title: str, row_labels: list[str]) -> Figure:
    height, width = image.shape
    fig = Figure(figsize=(width / _SIDE, height / _SIDE + 0.4))
    ax = fig.subplots()
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([_SIDE * (i + 0.5) for i in range(len(row_labels))], row_labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray) -> Figure:
    """Test digits (top row) above their reconstructions (bottom row)."""
    return _digits_figure(
        mosaic([originals, reconstructions]),
        "Test digits and their reconstructions",
        ["input", "recon."],
    )


def image_grid(images: np.ndarray, title: str) -> Figure:
    """Digits in a square-ish grid, e.g. decoded samples from the prior."""
    cols = int(np.ceil(np.sqrt(len(images))))
    padded = np.concatenate([images, np.zeros((-len(images) % cols, images.shape[1]))])
    rows = [padded[i : i + cols] for i in range(0, len(padded), cols)]
    return _digits_figure(mosaic(rows), title, [""] * len(rows))


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
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel(f"{axis_name}1")
    ax.set_ylabel(f"{axis_name}2")
    ax.set_title(f"Latent means of {len(labels)} test digits")
    fig.tight_layout()
    return fig


def loss_curves(history: dict[str, list[float]]) -> Figure:
    """Train and validation curves of each term, so the KL / reconstruction split is visible."""
    fig = Figure(figsize=(4 * len(TERMS), 3.2))
    axes = fig.subplots(1, len(TERMS))
    for ax, term in zip(axes, TERMS, strict=True):
        for split, style in zip(EPOCH_SPLITS, ("-o", "--s"), strict=True):
            values = history.get(f"{split}/{term}", [])
            ax.plot(range(1, len(values) + 1), values, style, label=split, markersize=3)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    return fig


def save(figure: Figure, path: Path, dpi: int = 90) -> None:
    figure.savefig(path, dpi=dpi)


def png_bytes(figure: Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
