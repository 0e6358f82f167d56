"""What `harness run` trains: targets (architecture names, 'baselines', stored run ids) as RunSpecs, with each
registered architecture's own defaults applied here, so Python and the CLI train the same model."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from harness.config import DataConfig, Origin, RunSpec, TrainingConfig
from harness.config_files import is_spec_file, read_spec
from harness.registry import ARCHITECTURES
from harness.settings import build, check_names, flat_names
from harness.store.runs import RunStore

BASELINES = "baselines"  # the target that names the seed notebook's registered baselines


def run_settings() -> list[str]:
    """The keyword arguments a run takes: every training and data knob, by field name (epochs, sample, dihedral)."""
    return flat_names(TrainingConfig) + flat_names(DataConfig)


def architectures(targets: Iterable[str]) -> list[str]:
    """Registered names in order, 'baselines' expanded, repeats dropped (an unknown name is a one-line error)."""
    names: list[str] = []
    for target in targets:
        names += ARCHITECTURES.names(baseline=True) if target == BASELINES else [ARCHITECTURES.get(target).name]
    return list(dict.fromkeys(names))


def registered_training(name: str) -> TrainingConfig:
    """An architecture's registered training defaults (the notebook's recipe for a baseline), else the class's."""
    return ARCHITECTURES.get(name).meta.get("training") or TrainingConfig()


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat keyword settings (None: not given) as (training, data) values; an unknown name is a one-line error."""
    given = {k: v for k, v in settings.items() if v is not None}
    check_names(given, run_settings())
    training = {k: v for k, v in given.items() if k in flat_names(TrainingConfig)}
    return training, {k: v for k, v in given.items() if k not in training}


def stored_spec(target: str, store: RunStore | None) -> RunSpec | None:
    """The spec of a run to train again: a run's spec.json, or a stored run's id; None for any other target."""
    if is_spec_file(target):
        return read_spec(target)
    if store is not None and target not in ARCHITECTURES and target != BASELINES and store.has(target):
        return RunSpec.from_dict(store.get(target).spec)
    return None


def plan(targets: str | Iterable[str], store: RunStore | None = None, **settings: Any) -> list[RunSpec]:
    """One RunSpec per target: a registered architecture with its defaults and the settings given on top, or a
    stored run (by id, when `store` is given, or by its spec.json) trained again with the settings given changed."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    training_values, data_values = split_settings(settings)
    data = build(DataConfig(), data_values)
    specs: list[RunSpec] = []
    for target in dict.fromkeys(targets):  # keep order, drop repeats
        stored = stored_spec(target, store)
        if stored is not None:
            specs.append(
                dataclasses.replace(
                    stored,
                    training=build(stored.training, training_values),
                    data=build(stored.data, data_values),
                    seed=data_values.get("seed", stored.seed),
                    origin=Origin(kind=f"rerun:{target}"),
                )
            )
            continue
        for name in architectures([target]):
            baseline = bool(ARCHITECTURES.get(name).meta.get("baseline"))
            origin = Origin(kind="baseline" if baseline else "run")  # `harness run cnn` is no baseline
            training = build(registered_training(name), training_values)
            specs.append(RunSpec(name, training=training, data=data, seed=data.seed, origin=origin))
    return specs
