"""PNG plots of one run: the notebook's learning curve and a ROC curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from harness.atomic import atomic_path


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def integer_epochs(ax: plt.Axes, epochs: pd.Series | np.ndarray) -> None:
    """Whole-number epoch ticks; one epoch gets a visible range around it, not matplotlib's 0.96 to 1.04."""
    values = np.asarray(epochs, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return
    low, high = values.min(), values.max()
    if high - low < 2:  # too narrow for the locator to find whole numbers on its own
        ax.set_xlim(low - 0.5, high + 0.5)
        ax.set_xticks(np.arange(int(low), int(high) + 1))
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def learning_curve(history: pd.DataFrame, title: str, path: str | Path, best_epoch: int | None = None) -> plt.Figure:
    """Train and validation accuracy per epoch, as the notebook plots them, with loss and AUC beside."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")  # the title clear of the panels
    for ax, metric in zip(axes, ("accuracy", "auc", "loss"), strict=True):
        if metric in history:
            ax.plot(history["epoch"], history[metric], marker="o", label=f"train {metric}")
        if f"val_{metric}" in history:
            ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label="kept epoch")
        ax.set_xlabel("epoch")
        integer_epochs(ax, history["epoch"])
        ax.set_title(metric)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)
    return fig


def roc(labels: np.ndarray, probabilities: np.ndarray, title: str, path: str | Path) -> plt.Figure:
    """The ROC curve of the validation predictions; the title says so, with the set's size."""
    fig, ax = plt.subplots(figsize=(4.5, 4.7))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probabilities)
        ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, probabilities):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    positives = int(np.sum(np.asarray(labels) == 1))
    ax.set_title(f"{title}\nROC on the validation set: {len(labels):,} images, {positives:,} tumour", fontsize=9)
    ax.legend(loc="lower right")
    save_figure(fig, path)
    return fig
