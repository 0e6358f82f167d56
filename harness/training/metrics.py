"""Validation metrics from probabilities: accuracy at 0.5, ROC AUC (Kaggle's score) and log loss."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels).astype(int)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    both_classes = len(np.unique(labels)) == 2
    return {
        "val_accuracy": float(np.mean((p >= 0.5) == labels)),
        "val_auc": float(roc_auc_score(labels, p)) if both_classes else math.nan,
        "val_loss": float(log_loss(labels, p, labels=[0, 1])),
    }
