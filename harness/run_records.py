"""Run records opened in one place: the id and the first row (what ran, on which data, on what machine) of any run."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.backend import environment
from harness.config import RunSpec
from harness.store.runs import RunRecord, RunStore

# The runs this process is training now, with their study (None: a plain run); the runner adds and removes them:
# what a Ctrl-C message names.
IN_PROGRESS: list[tuple[str, str | None]] = []


def new_run_id(architecture: str) -> str:
    """A unique, sortable id: start time, architecture, random suffix (parallel workers start in the same second)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{architecture}-{secrets.token_hex(3)}"


def start_run(
    store: RunStore,
    run_id: str,
    spec: RunSpec | Mapping[str, Any],
    *,
    dataset: str | Path | None,
    synthetic: bool | None,
    hyperparameters: Mapping[str, Any] | None = None,
    artifacts: str | Path | None = None,
    **counts: Any,
) -> None:
    """Insert `run_id`'s first row, status running. `spec` is a RunSpec (a trained run: architecture, origin and TTA
    come from it) or the stored dict of a run of no registered architecture (an ensemble: it names its own
    `architecture` and `origin`). `counts` are further columns known at the start (n_train, n_val, folds)."""
    env = environment()
    if isinstance(spec, RunSpec):
        origin = spec.origin
        columns: dict[str, Any] = {
            "architecture": spec.architecture,
            "origin": origin.kind,
            "study": origin.study,
            "trial": origin.trial,
            "tuner": origin.tuner,
            "spec": spec.to_dict(),
            "tta": spec.training.tta,
        }
    else:
        stored = dict(spec)
        columns = {"architecture": stored["architecture"], "origin": stored.pop("origin"), "spec": stored}
    store.start(
        run_id,
        **columns,
        hyperparameters=dict(hyperparameters) if hyperparameters is not None else None,
        dataset=str(dataset) if dataset is not None else None,
        synthetic=synthetic,
        backend=env["backend"],
        environment=env,
        artifacts=str(artifacts) if artifacts is not None else None,
        **counts,
    )


def record_never_built(
    store: RunStore,
    spec: RunSpec,
    reason: str,
    *,
    dataset: str | Path | None,
    synthetic: bool | None,
    hyperparameters: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Store a point that must never be built (a search space refused it) as a pruned run that says why."""
    run_id = new_run_id(spec.architecture)
    start_run(store, run_id, spec, dataset=dataset, synthetic=synthetic, hyperparameters=hyperparameters)
    store.update(run_id, status="pruned", epochs_run=0, error=f"invalid configuration, never built: {reason}")
    return store.get(run_id)
