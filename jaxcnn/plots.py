"""The pictures a run leaves behind: the smoothed loss and a gallery of mistakes."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fileio import atomic_write_bytes  # noqa: E402


def _save(fig, path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


def plot_loss(path, rl, steps_per_epoch: int | None = None, title: str = "") -> None:
    """`figure; plot(cnn.rL)`: the smoothed loss over SGD steps, epochs marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(len(rl)), rl, lw=1.2)
    if steps_per_epoch and len(rl) > steps_per_epoch:
        for e in range(steps_per_epoch, len(rl), steps_per_epoch):
            ax.axvline(e, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("rL  (smoothed ½·Σe²/batch)")
    ax.set_title(title or "smoothed training loss rL")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_misclassified(path, images, labels, predictions, bad, class_names, limit: int = 60) -> None:
    """A gallery of the first `limit` misclassified test images, titled 'true → predicted'."""
    total = len(bad)
    bad = np.asarray(bad)[:limit]
    cols = 10
    rows = max(1, -(-len(bad) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.45), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), bad):
        image = images[i]
        ax.imshow(image if image.ndim == 2 or image.shape[-1] == 3 else image[..., 0], cmap="gray_r")
        ax.set_title(f"#{i}\n{class_names[labels[i]]}→{class_names[predictions[i]]}", fontsize=6.5)
    fig.suptitle(f"{len(bad)} of the {total} misclassified test images (true→predicted)" if total
                 else "no misclassified test images", fontsize=9)
    _save(fig, path)


def plot_curves(path, curves: dict, title: str) -> None:
    """Several rL curves on one axis (a sweep's members), labelled by what differs between them."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, rl in curves.items():
        ax.plot(np.arange(len(rl)), rl, lw=1.0, label=label)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("rL")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) <= 16:
        ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
