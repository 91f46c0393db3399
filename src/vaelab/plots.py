"""Figures returned as objects; the caller decides where they go (MLflow, a report, a test)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: runs and tests never need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vaelab.models import TERMS  # noqa: E402

_SIDE = 28


def _show_digits(axes, images: np.ndarray) -> None:
    for ax, image in zip(axes, images, strict=True):
        ax.imshow(image.reshape(_SIDE, _SIDE), cmap="gray", vmin=0.0, vmax=1.0)
        ax.axis("off")


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray) -> Figure:
    """Test digits (top row) above their reconstructions (bottom row)."""
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(n, 2.2))
    _show_digits(axes[0], originals)
    _show_digits(axes[1], reconstructions)
    axes[0][0].set_title("input", fontsize=8, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, title: str) -> Figure:
    """A square-ish grid of digits, e.g. decoded samples from the prior."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows + 0.4), squeeze=False)
    flat = axes.ravel()
    _show_digits(flat[: len(images)], images)
    for ax in flat[len(images) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


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
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel(f"{axis_name}1")
    ax.set_ylabel(f"{axis_name}2")
    ax.set_title(f"Latent means of {len(labels)} test digits")
    fig.tight_layout()
    return fig


def loss_curves(history: dict[str, list[float]]) -> Figure:
    """Train and validation curves of each term, so the KL / reconstruction split is visible."""
    fig, axes = plt.subplots(1, len(TERMS), figsize=(4 * len(TERMS), 3.2))
    for ax, term in zip(axes, TERMS, strict=True):
        for split, style in (("train", "-o"), ("val", "--s")):
            values = history.get(f"{split}/{term}", [])
            ax.plot(range(1, len(values) + 1), values, style, label=split, markersize=3)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    return fig
