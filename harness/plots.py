"""PNG plots of one run: the notebook's learning curve and a ROC curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from harness.atomic import atomic_path


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def learning_curve(history: pd.DataFrame, title: str, path: str | Path, best_epoch: int | None = None) -> None:
    """Train and validation accuracy per epoch, as the notebook plots them, with loss and AUC beside."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, ("accuracy", "auc", "loss"), strict=True):
        if metric in history:
            ax.plot(history["epoch"], history[metric], marker="o", label=f"train {metric}")
        if f"val_{metric}" in history:
            ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label="kept epoch")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


def roc(labels: np.ndarray, probabilities: np.ndarray, title: str, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probabilities)
        ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, probabilities):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    save_figure(fig, path)
