"""Per-epoch checkpoints of one fit (model and optimiser state, kept-best weights, records), so a killed run resumes."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from harness.atomic import atomic_path, write_text
from harness.path_guard import really_inside
from harness.training.checkpoint_state import DamagedCheckpoint, check_state, field_names, read_raw

CHECKPOINT = "checkpoint"  # the folder beside a fit's model.keras
STATE = "state.json"  # written last: it names the epoch whose files are complete


@dataclass
class FitState:
    """What a fit had done after its last completed epoch (the history rows, the kept epoch, the patience count)."""

    epoch: int = 0  # completed epochs
    start_epoch: int = 0  # epochs trained before this run's own (continued from a parent's checkpoint)
    rows: list[dict[str, Any]] = field(default_factory=list)  # history.csv's rows so far
    train_seconds: list[float] = field(default_factory=list)
    best: float = -math.inf
    best_epoch: int = 0
    wait: int = 0  # early stopping: epochs since the last improvement
    wait_best: float | None = None
    finished: bool = False  # stopped early, by the time limit, or after its last epoch
    stopped_by_time_limit: bool = False


def read_state(folder: Path, epochs: int | None = None, patience: int | None = None) -> FitState | None:
    """The checkpoint's state, or None where there is none (a fresh fit, or one killed in its first epoch). It is
    checked first (checkpoint_state): keys, types, ranges, at most `epochs`, agreeing with its own history, and
    naming weights that exist; a state that fails is one line that names the file."""
    path = Path(folder) / STATE
    if not path.exists():
        return None
    raw = check_state(path, read_raw(path), field_names(FitState), epochs, patience)
    if raw.get("epoch"):
        for name in (f"epoch{raw['epoch']}.weights.h5", f"epoch{raw['epoch']}.extra.npz"):
            if not (Path(folder) / name).is_file():
                raise DamagedCheckpoint(f"checkpoint {path}: names epoch {raw['epoch']}, but {name} is missing")
    raw = {"start_epoch": 0 if raw.get("rows") or not raw.get("epoch") else raw["epoch"], **raw}
    raw["best"] = -math.inf if raw.get("best") is None else raw["best"]
    return FitState(**raw)


def seed_states(model: keras.Model) -> list[keras.Variable]:
    """The random layers' seed-generator states: part of `model.variables`, but not of the weights save_weights keeps,
    so without them a resumed Dropout or augmentation layer would draw other masks than an uninterrupted run."""
    kept = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in kept]


def write_history(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: the model and optimiser state (Keras' `save_weights`), the seed states, the kept-best
    weights and the FitState, and history.csv grown by one row; on a resumed fit's start, all of it put back.

    Not keras.callbacks.BackupAndRestore: it saves `latest.weights.h5` and then `training_metadata.json` ({"epoch"})
    in place, so a kill between the two resumes the new weights at the old epoch, and it knows nothing of the
    harness's kept-best weights and records. Here each epoch's files carry its number and STATE, replaced
    atomically last, names the complete set; the previous epoch's files go only after that.
    """

    def __init__(self, folder: Path | None, history: Path | None, state: FitState, owner: Any) -> None:
        super().__init__()
        self.folder = Path(folder) if folder is not None else None  # None: keep the records only, save nothing
        self.history = Path(history) if history is not None else None
        self.state = state
        self.owner = owner  # the fit's callbacks whose state the checkpoint carries (train.FitCallbacks)
        self._restore = state.epoch > 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self._restore or self.folder is None:
            return
        self._restore = False
        model = self.model
        optimizer = model.optimizer
        # The optimiser's slots exist only once built; a fit resumed at a phase boundary (--freeze-epochs) starts
        # its new phase with a fresh optimiser, as the uninterrupted fit does, so its saved slots are skipped.
        at_boundary = self.owner.phase_start == self.state.epoch and self.state.epoch > 0
        if optimizer is not None and not optimizer.built and not at_boundary:
            optimizer.build(model.trainable_variables)
        with warnings.catch_warnings():
            if at_boundary:
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(self.folder / f"epoch{self.state.epoch}.weights.h5")
        with np.load(self.folder / f"epoch{self.state.epoch}.extra.npz") as extra:
            for i, variable in enumerate(seed_states(model)):
                variable.assign(extra[f"seed{i}"])

    def best_weights(self) -> list[np.ndarray] | None:
        path = self.folder / f"epoch{self.state.epoch}.extra.npz" if self.folder is not None else None
        if path is None or not path.exists():
            return None
        with np.load(path) as extra:
            count = int(extra["best_count"])
            return [extra[f"best{i}"] for i in range(count)] if count else None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        owner, state = self.owner, self.state
        row = {"epoch": epoch + 1, **{k: _number(v) for k, v in (logs or {}).items()}}
        row["seconds"] = owner.timer.seconds[-1]
        state.rows.append(row)
        state.train_seconds.append(owner.timer.train_seconds[-1])
        state.epoch = epoch + 1
        state.best, state.best_epoch = owner.best.best, owner.best.best_epoch
        if owner.patience is not None:
            state.wait, state.wait_best = owner.patience.wait, _number(owner.patience.best)
        state.stopped_by_time_limit = owner.stopped_by_clock  # --time-limit or --deadline
        state.finished = bool(self.model.stop_training) or state.epoch >= owner.epochs
        if self.history is not None:  # first: the log is never behind the checkpoint (a resume rewrites it)
            write_history(state.rows, self.history)
        if self.folder is not None:
            self.save(self.folder)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        n = self.state.epoch
        self.model.save_weights(folder / f"epoch{n}.weights.h5")  # layers and optimiser slots
        kept = self.owner.best.weights or []
        arrays: dict[str, Any] = {f"seed{i}": np.asarray(v.numpy()) for i, v in enumerate(seed_states(self.model))}
        arrays |= {f"best{i}": w for i, w in enumerate(kept)}
        arrays["best_count"] = np.asarray(len(kept))
        np.savez(folder / f"epoch{n}.extra.npz", **arrays)
        state = asdict(self.state)
        state["best"] = None if not math.isfinite(self.state.best) else self.state.best
        write_text(folder / STATE, json.dumps(state, default=_number))
        for old in folder.glob("epoch*"):
            if not old.name.startswith(f"epoch{n}."):
                old.unlink(missing_ok=True)


def _number(value: Any) -> Any:
    """A log value as a plain float (Keras gives numpy or backend scalars); None stays None."""
    if value is None:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return float(value)
    return value


def _checkpoints(folder: Path) -> list[Path]:
    """Every fit's checkpoint folder under a run's folder (folds have one each)."""
    return [p for p in [Path(folder) / CHECKPOINT, *sorted(Path(folder).glob(f"fold*/{CHECKPOINT}"))] if p.is_dir()]


def _bytes(found: Path) -> int:
    return sum(f.stat().st_size for f in found.rglob("*") if f.is_file())


def delete_checkpoints(folder: Path, results: Path) -> int:
    """Remove every fit's checkpoint under a run's folder; the bytes freed. A checkpoint whose real place is outside
    the results folder (a run folder moved elsewhere and linked back) is left where it is."""
    freed = 0
    for found in _checkpoints(folder):
        if not really_inside(results, found):
            continue
        freed += _bytes(found)
        shutil.rmtree(found, ignore_errors=True)
    return freed


def checkpoint_bytes(folder: Path) -> int:
    """The bytes of every fit's checkpoint under a run's folder."""
    return sum(_bytes(found) for found in _checkpoints(folder))


def continue_from(parent: Path, child: Path) -> int | None:
    """Seed a new run's folder with its parent run's checkpoints (one per fold), so that its fit starts where the
    parent's stopped: the model, the optimiser's slots and the seed states of the parent's last epoch, and that epoch
    number (the shuffle replays up to it). The records stay the child's own: no history rows, seconds, kept weights
    or patience count, so its epochs_run and seconds count only what it trains. Returns the epoch it starts after
    (the smallest over folds), or None, writing nothing, when the parent did not keep a checkpoint of every fit."""
    found = _checkpoints(parent)
    states = [read_state(source) for source in found]
    if not found or any(state is None or state.epoch < 1 for state in states):
        return None
    for source, state in zip(found, states, strict=True):
        assert state is not None
        target = Path(child) / source.relative_to(parent)
        target.mkdir(parents=True, exist_ok=True)
        n = state.epoch
        with atomic_path(target / f"epoch{n}.weights.h5") as tmp:
            shutil.copyfile(source / f"epoch{n}.weights.h5", tmp)
        with np.load(source / f"epoch{n}.extra.npz") as extra:
            seeds = {key: extra[key] for key in extra.files if key.startswith("seed")}
        with atomic_path(target / f"epoch{n}.extra.npz") as tmp, open(tmp, "wb") as out:
            np.savez(out, best_count=np.asarray(0), **seeds)
        # Last: it names the set. start_epoch: the epochs before the child's own history begins.
        write_text(target / STATE, json.dumps({**asdict(FitState(epoch=n, start_epoch=n)), "best": None}))
    return min(state.epoch for state in states if state is not None)


def has_checkpoint(folder: Path) -> bool:
    """Whether any fit of the run in `folder` completed an epoch (its state names one)."""
    return any((p / STATE).exists() for p in _checkpoints(folder))


def reopen(folder: Path, results: Path) -> int:
    """Let every fit of a finished run go on (a clocked search promotes a trial to its next rung): its checkpoints,
    checked first, say "not finished" again; the epoch they completed is returned (the smallest over folds)."""
    epochs = []
    for found in _checkpoints(folder):
        if not really_inside(results, found):
            raise DamagedCheckpoint(f"checkpoint {found} lies outside the results folder {results}; not reopened")
        state = read_state(found)
        if state is None:
            raise DamagedCheckpoint(f"checkpoint {found} completed no epoch; nothing to go on from")
        raw = json.loads((found / STATE).read_text())
        write_text(found / STATE, json.dumps({**raw, "finished": False, "stopped_by_time_limit": False}))
        epochs.append(state.epoch)
    if not epochs:
        raise DamagedCheckpoint(f"run folder {folder} kept no checkpoint to go on from")
    return min(epochs)
