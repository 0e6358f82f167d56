"""Which runs are comparable: a run's data and training budget as a key, and in words."""

from __future__ import annotations

import json
from typing import Any

from harness.config import AugmentConfig
from harness.store.runs import RunRecord


def budget_of(dataset: str | None, spec: dict[str, Any]) -> tuple[Any, ...]:
    """Runs are comparable when they saw the same data (dataset, protocol, sample, split seed, folds) for as many
    epochs with the same recipe (augmentation, TTA, BatchNorm re-estimation)."""
    data, training = spec.get("data", {}), spec.get("training", {})
    try:
        augment = training.get("augment") or {}
        default = AugmentConfig()
        changed = {k: v for k, v in sorted(augment.items()) if v != getattr(default, k, None)}
        active = AugmentConfig(**augment).active
        recipe = " ".join(f"{k}={v}" for k, v in changed.items()) if active else "none"
    except (TypeError, ValueError):  # a record written by an older or newer harness
        recipe = json.dumps(training.get("augment"), sort_keys=True, default=str)
    return (
        dataset,
        data.get("protocol"),
        data.get("sample"),
        data.get("seed"),
        data.get("folds", 1),
        training.get("epochs"),
        recipe,
        training.get("tta", 1),
        training.get("precise_bn", 0),
        training.get("steps_per_epoch"),  # None: full passes; a scaling study's equal-compute points train fewer
    )


def budget_key(record: RunRecord) -> tuple[Any, ...]:
    return budget_of(record.dataset, record.spec or {})


def budget_text(key: tuple[Any, ...]) -> str:
    """A budget key in words, e.g. '3 epochs, protocol seed, sample 4000, split seed 101, precise BN 20'."""
    _dataset, protocol, sample, seed, folds, epochs, augment, tta, precise_bn, steps = key
    words = [
        f"{epochs} epochs" + (f" of {steps} steps" if steps else ""),
        f"protocol {protocol}",
        f"sample {sample or 'all'}",
        f"split seed {seed}",
    ]
    words += [f"{folds} folds"] if folds and folds > 1 else []
    words += [f"augment {augment}"] if augment != "none" else []
    words += [f"TTA x{tta}"] if tta and tta > 1 else []
    words += [f"precise BN {precise_bn}" if precise_bn else "no BN re-estimation"]
    return ", ".join(words)
