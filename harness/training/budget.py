"""Which runs are comparable: a run's data and training budget as a key, and in words.

The key's parts are the settings fields marked `budget=True` (harness.settings.knob): a new knob that changes
what "the same budget" means is one field with that mark, here nothing to edit.
"""

from __future__ import annotations

import json
from dataclasses import Field
from typing import Any

from harness.config import DataConfig, TrainingConfig
from harness.settings import knobs, nested
from harness.store.runs import RunRecord


def _budget_fields(cls: type) -> list[Field[Any]]:
    return [f for f in knobs(cls) if f.metadata["budget"]]


DATA_PARTS = _budget_fields(DataConfig)
TRAINING_PARTS = _budget_fields(TrainingConfig)
# The key's layout: the dataset, then the data's budget fields, then the training's (protocol, sample, seed, folds,
# epochs, augment, tta, precise_bn, steps_per_epoch, ...): read it by name, zip(BUDGET_NAMES, key).
BUDGET_NAMES = ("dataset", *(f.name for f in DATA_PARTS), *(f.name for f in TRAINING_PARTS))


def _recipe(kind: type, raw: Any) -> str:
    """A nested settings value (augmentation) as the fields that differ from its defaults, or 'none'."""
    try:
        value = kind(**(raw or {}))
        default = kind()
        changed = {k: v for k, v in sorted((raw or {}).items()) if v != getattr(default, k, None)}
        return " ".join(f"{k}={v}" for k, v in changed.items()) if getattr(value, "active", True) else "none"
    except (TypeError, ValueError):  # a record written by an older or newer harness
        return json.dumps(raw, sort_keys=True, default=str)


def budget_of(dataset: str | None, spec: dict[str, Any]) -> tuple[Any, ...]:
    """Runs are comparable when they saw the same data (dataset, protocol, sample, split seed, folds) for as many
    epochs with the same recipe (augmentation, TTA, BatchNorm re-estimation)."""
    data, training = spec.get("data", {}), spec.get("training", {})
    parts: list[Any] = [dataset]
    parts += [data.get(f.name, f.metadata["absent"]) for f in DATA_PARTS]
    for f in TRAINING_PARTS:
        kind = nested(TrainingConfig, f)
        raw = training.get(f.name, f.metadata["absent"])
        parts.append(_recipe(kind, raw) if kind is not None else raw)
    return tuple(parts)


def budget_key(record: RunRecord) -> tuple[Any, ...]:
    return budget_of(record.dataset, record.spec or {})


def budget_text(key: tuple[Any, ...]) -> str:
    """A budget key in words, e.g. '3 epochs, protocol seed, sample 4000, split seed 101, precise BN 20'."""
    parts = dict(zip(BUDGET_NAMES, key, strict=False))
    epochs, steps, folds = parts.pop("epochs"), parts.pop("steps_per_epoch", None), parts.pop("folds", 1)
    augment, tta, precise_bn = parts.pop("augment", "none"), parts.pop("tta", 1), parts.pop("precise_bn", 0)
    words = [
        (f"{epochs} epoch" if epochs == 1 else f"{epochs} epochs") + (f" of {steps} steps" if steps else ""),
        f"protocol {parts.pop('protocol')}",
        f"sample {parts.pop('sample') or 'all'}",
        f"split seed {parts.pop('seed')}",
    ]
    words += [f"{folds} folds"] if folds and folds > 1 else []
    words += [f"augment {augment}"] if augment != "none" else []
    words += [f"TTA x{tta}"] if tta and tta > 1 else []
    words += [f"precise BN {precise_bn}" if precise_bn else "no BN re-estimation"]
    parts.pop("dataset", None)
    words += [f"{name.replace('_', ' ')} {value}" for name, value in parts.items() if value is not None]  # new knobs
    return ", ".join(words)
