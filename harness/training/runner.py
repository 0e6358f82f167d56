"""One run: spec -> trained model -> metrics, predictions, artifacts and one stored record."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from rich.console import Console

from harness.atomic import atomic_path, write_text
from harness.backend import forget_traced_gradients
from harness.clock import Deadline
from harness.config import RunSpec
from harness.data import Dataset
from harness.data.feed import ImageBatches
from harness.data.splits import Split, make_splits
from harness.data.submission import build_submission, write_submission
from harness.errors import HarnessError, one_line
from harness.path_guard import refuse_outside
from harness.run_records import IN_PROGRESS, new_run_id, start_run
from harness.store.liveness import RunHeartbeat
from harness.store.runs import RunRecord, RunStore
from harness.terminal.progress import PHASE_IMAGES, Overall, display_label, epoch_progress, phase
from harness.training import plots
from harness.training.callbacks import DeadlineStop, tensorboard_logs
from harness.training.checkpoint import CHECKPOINT, delete_checkpoints, has_checkpoint, reopen
from harness.training.inference import predict_probabilities
from harness.training.metrics import binary_metrics
from harness.training.portable import load_model_safely, save_model
from harness.training.train import FitResult, build_core, compile_model, fit, model_input_shape, with_input_pipeline


@dataclass
class Runner:
    """Trains runs against one dataset and one store, writing artifacts under `results_dir/runs/<run_id>/`."""

    dataset: Dataset
    store: RunStore
    results_dir: Path
    progress: bool = True  # live bars on a terminal; False, or off a terminal: one plain line per epoch
    console: Console | None = None
    overall: Overall | None = None  # the whole job's ETA (all runs, all trials), shown beside each fit's
    save_optimizer: bool = False  # keep the optimiser's state in model.keras (Adam: twice the weights' size)
    keep_checkpoints: bool = False  # keep a finished run's per-epoch checkpoint (training.checkpoint)
    # The command's clock (--deadline): a fit stops where the clock leaves only what must follow it, `reserve()`
    # seconds included (a search's endgame); None: no clock.
    deadline: Deadline | None = None
    reserve: Callable[[], float] | None = None
    # False: validate only, and predict the test set later, once the run is worth submitting (predict_test_set);
    # a clocked search's rungs do so, since a Kaggle test set is four times the validation set.
    predict_test: bool = True

    def __post_init__(self) -> None:
        self.results_dir = Path(self.results_dir)
        self.console = self.console or Console(stderr=True)
        self._splits: dict[Any, list[Split]] = {}

    def splits_for(self, spec: RunSpec) -> list[Split]:
        key = dataclasses.astuple(spec.data)
        if key not in self._splits:
            self._splits[key] = make_splits(self.dataset, spec.data)
        return self._splits[key]

    def run(
        self,
        spec: RunSpec,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        hyperparameters: dict[str, Any] | None = None,
        pruned_exceptions: tuple[type[BaseException], ...] = (),
        run_id: str | None = None,
        resume: bool = False,
    ) -> RunRecord:
        """Train, evaluate and predict one spec. Failures are recorded and returned; pruning and Ctrl-C re-raise.

        resume: `run_id` is a stored run that did not finish; it goes on from its checkpoint, under its own id.
        """
        run_id = run_id or new_run_id(spec.architecture)
        folder = self.results_dir / "runs" / run_id
        if resume:
            folder = Path(self.store.get(run_id).artifacts or folder)
        refuse_outside(self.results_dir, folder, f"write the files of run {run_id}")
        splits = self.splits_for(spec)  # before anything is written: a refused split leaves no empty run folder
        folder.mkdir(parents=True, exist_ok=True)
        if resume:
            self.store.update(
                run_id, status="running", error=None, host=socket.gethostname(), pid=os.getpid(), spec=spec.to_dict()
            )
            write_text(folder / "spec.json", json.dumps(spec.to_dict(), indent=2, default=str))
        else:
            self._start(run_id, spec, folder, splits, hyperparameters)
        entry = (run_id, spec.origin.study)
        IN_PROGRESS.append(entry)
        try:
            # The record beats while the run trains: another host sees a killed run's record go silent.
            with RunHeartbeat(lambda: self.store.touch(run_id)):
                values = self._cross_validate(spec, splits, folder, callbacks)
            IN_PROGRESS.remove(entry)
        except KeyboardInterrupt:
            self.store.update(run_id, status="interrupted", error="interrupted by the user (Ctrl-C)")
            raise
        except pruned_exceptions as exc:
            self.store.update(run_id, status="pruned", error=one_line(exc) or "pruned")
            self._drop_checkpoints(folder)
            raise
        except Exception as exc:  # a failed run is recorded and the next one goes on
            write_text(folder / "error.txt", traceback.format_exc())
            self.store.update(run_id, status="failed", error=one_line(exc))
        else:
            self.store.update(run_id, status="complete", **values)
            self._drop_checkpoints(folder)
        finally:
            if entry in IN_PROGRESS and not _interrupted():
                IN_PROGRESS.remove(entry)
            # Keep memory flat across many runs in one process (a 50-trial search, a list of architectures).
            keras.backend.clear_session()
            forget_traced_gradients()
        return self.store.get(run_id)

    def extend(self, run_id: str, spec: RunSpec, callbacks: Sequence[keras.callbacks.Callback] = ()) -> RunRecord:
        """Train a complete run further under its own id, from its checkpoint: `spec` is its spec with more epochs
        (or another schedule for them). Its history goes on; no epoch it trained is trained again."""
        record = self.store.get(run_id)
        reopen(Path(record.artifacts or ""), self.results_dir)
        return self.run(spec, callbacks=callbacks, run_id=run_id, resume=True)

    def _drop_checkpoints(self, folder: Path) -> None:
        """A finished run needs no checkpoint (Adam: about three times the weights) unless asked to keep it."""
        if not self.keep_checkpoints:
            delete_checkpoints(folder, self.results_dir)

    def _start(
        self, run_id: str, spec: RunSpec, folder: Path, splits: list[Split], hyperparameters: dict[str, Any] | None
    ) -> None:
        start_run(
            self.store,
            run_id,
            spec,
            dataset=self.dataset.root,
            synthetic=self.dataset.synthetic,
            hyperparameters=hyperparameters,
            artifacts=folder,
            n_train=len(splits[0].train),
            n_val=sum(len(s.val) for s in splits),
            folds=len(splits),
        )
        write_text(folder / "spec.json", json.dumps(spec.to_dict(), indent=2, default=str))

    def _cross_validate(
        self, spec: RunSpec, splits: list[Split], folder: Path, callbacks: Sequence[keras.callbacks.Callback]
    ) -> dict[str, Any]:
        """Fit one model per split; out-of-fold validation predictions; test predictions averaged over models.

        With one split this is a plain train/validation run. With K folds, every sampled image is predicted once
        by the model that did not train on it, and the metrics are the mean and spread over folds.
        """
        train_set = self.dataset.train
        assert train_set.labels is not None  # only the test set has none
        val_probs: list[np.ndarray] = []
        test_probs = np.zeros(len(self.dataset.test))
        fold_metrics, fits = [], []
        for k, split in enumerate(splits, start=1):
            label = spec.architecture if len(splits) == 1 else f"{spec.architecture} fold {k}/{len(splits)}"
            where = folder if len(splits) == 1 else folder / f"fold{k}"
            model, result, probs = self._fit(spec, split, where, callbacks, label)
            val_probs.append(probs)
            fold_metrics.append(binary_metrics(train_set.labels[split.val], probs))
            fits.append(result)
            if self.predict_test:
                test_probs += self._predict_test(model, spec) / len(splits)
            parameters = int(model.count_params())
            del model
            keras.backend.clear_session()

        val_index = np.concatenate([s.val for s in splits])
        probs = np.concatenate(val_probs)
        labels = train_set.labels[val_index]
        with atomic_path(folder / "val_predictions.csv") as tmp:
            frame = pd.DataFrame({"id": train_set.ids[val_index], "label": labels, "probability": probs})
            if len(splits) > 1:
                frame["fold"] = np.repeat(np.arange(1, len(splits) + 1), [len(s.val) for s in splits])
            frame.to_csv(tmp, index=False, float_format="%.6f")
        plots.roc(labels, probs, f"{spec.architecture} ({folder.name})", folder / "roc.png")
        if self.predict_test:
            self._write_submission(test_probs, folder)

        spread = pd.DataFrame(fold_metrics)
        values: dict[str, Any] = {key: float(spread[key].mean()) for key in spread}
        if not np.isfinite(values["val_auc"]):  # a complete run always has a score it can be ranked by
            raise ValueError("validation AUC is undefined: the validation set holds one label only")
        if len(splits) > 1:
            values["val_accuracy_std"] = float(spread["val_accuracy"].std(ddof=1))
            values["val_auc_std"] = float(spread["val_auc"].std(ddof=1))
        seconds = sum(f.seconds for f in fits)
        return {
            **values,
            "best_epoch": int(np.median([f.best_epoch for f in fits])),
            "epochs_run": max(f.epochs_run for f in fits),
            "seconds": seconds,
            "images_per_second": float(np.mean([f.images_per_second for f in fits])),
            "parameters": parameters,
            "submission": str(folder / "submission.csv") if self.predict_test else None,
        }

    def _predict_test(self, model: keras.Model, spec: RunSpec) -> np.ndarray:
        """The test set's probabilities; a long prediction (a Kaggle test set, TTA) shows its progress."""
        n, tta = len(self.dataset.test), spec.training.tta
        indices = np.arange(n)
        if n * tta < PHASE_IMAGES:
            return predict(model, self.dataset.test.images, indices, spec)
        assert self.console is not None
        label = f"{spec.architecture}: test set" + (f", TTA {tta}" if tta > 1 else "")
        with phase(self.console, label, n * tta, self.progress) as advance:
            return predict_probabilities(
                model, self.dataset.test.images, indices, spec.training.predict_batch_size, tta, advance=advance
            )

    def _write_submission(self, test_probs: np.ndarray, folder: Path) -> Path:
        submission = build_submission(list(self.dataset.test.ids), test_probs, self.dataset.submission_ids)
        return write_submission(submission, folder / "submission.csv", self.dataset.submission_ids)

    def predict_test_set(self, run_id: str, tta: int | None = None) -> RunRecord:
        """A complete run's test predictions, made now from its saved model(s) (one per fold, averaged), with its own
        TTA or `tta`: for a run trained with predict_test=False, once it is worth submitting."""
        record = self.store.get(run_id)
        folder = Path(record.artifacts or "")
        refuse_outside(self.results_dir, folder, f"write the submission of run {run_id}")
        spec = RunSpec.from_dict(record.spec)
        if tta is not None:
            spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, tta=tta))
        models = sorted(folder.glob("model.keras")) or sorted(folder.glob("fold*/model.keras"))
        if not models:
            raise HarnessError(f"run {run_id} has no model.keras in {folder} to predict the test set with")
        test_probs = np.zeros(len(self.dataset.test))
        for path in models:
            model = load_model_safely(path)
            test_probs += self._predict_test(model, spec) / len(models)
            del model
            keras.backend.clear_session()
        written = self._write_submission(test_probs, folder)
        self.store.update(run_id, submission=str(written))
        return self.store.get(run_id)

    def _fit(
        self, spec: RunSpec, split: Split, folder: Path, callbacks: Sequence[keras.callbacks.Callback], label: str
    ) -> tuple[keras.Model, FitResult, np.ndarray]:
        """Build, fit and save one model; return it, its fit and its validation probabilities."""
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        augment = spec.training.augment
        # The architecture's layers compute in the run's precision; the pipeline's input and the output stay float32.
        core = build_core(spec.architecture, spec.training.precision, model_input_shape(augment), **spec.arch_kwargs)
        train_set = self.dataset.train
        batch = spec.training.batch_size
        train = ImageBatches(
            train_set.images,
            split.train,
            train_set.labels,
            batch,
            shuffle=True,
            seed=spec.seed,
            steps=spec.training.steps_per_epoch,
        )
        val = ImageBatches(train_set.images, split.val, train_set.labels, batch)
        # A learning-rate schedule spans the run's steps: compiled once the batches per epoch are known.
        model = compile_model(with_input_pipeline(core, augment, spec.seed), spec.training, len(train))
        shown = display_label(label, spec.origin.study, spec.origin.trial)
        assert self.console is not None
        extra = [*callbacks, *tensorboard_logs(spec.training.tensorboard, self.results_dir, folder)]
        extra.append(epoch_progress(shown, spec.training.epochs, self.console, self.progress, self.overall))
        clock = None
        if self.deadline is not None:
            after = 2 * len(split.val) + (len(self.dataset.test) * spec.training.tta if self.predict_test else 0)
            clock = DeadlineStop(self.deadline, after, reserve=self.reserve)
        # Each epoch is checkpointed and history.csv grows by a row; a checkpoint left by a killed run is resumed.
        result = fit(model, train, val, spec.training, extra, folder / CHECKPOINT, folder / "history.csv", clock)

        probs = predict(model, train_set.images, split.val, spec)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "model.keras") as tmp:
            # The inference graph, uncompiled: plain Keras loads it; no optimiser slots (seed_model1: 145 MB, not 436).
            save_model(model, tmp, self.save_optimizer)
        with atomic_path(folder / "history.csv") as tmp:
            result.history.to_csv(tmp, index=False)
        plots.learning_curve(
            result.history, f"{label} ({folder.name})", folder / "learning_curve.png", result.best_epoch
        )
        return model, result, probs


def predict(model: keras.Model, images: np.ndarray, indices: np.ndarray, spec: RunSpec) -> np.ndarray:
    """Probabilities for `images[indices]`, in that order, in large batches, averaged over the spec's TTA."""
    return predict_probabilities(model, images, indices, spec.training.predict_batch_size, spec.training.tta)


RESUMABLE = ("interrupted", "failed")  # a killed run is failed once its dead process is noticed (reap_dead)


def resume_spec(store: RunStore, run_id: str) -> RunSpec:
    """The stored spec of a run that stopped before it finished, to go on from its checkpoint; else a one-line
    error that names the run id."""
    if not store.has(run_id):
        raise HarnessError(f"--resume: no run {run_id!r} in the store (see harness leaderboard --all)")
    store.reap_dead()
    record = store.get(run_id)
    if record.status == "running":
        raise HarnessError(f"--resume: run {run_id} is still running (pid {record.pid} on {record.host})")
    if record.status not in RESUMABLE or not record.spec or record.origin == "ensemble":
        raise HarnessError(f"--resume: run {run_id} is {record.status}; only an interrupted or failed run resumes")
    return RunSpec.from_dict(record.spec)


def continues(store: RunStore, run_id: str) -> bool:
    """Whether `harness run RUN_ID` (no settings changed) goes on with this run: it stopped before it finished
    and left a checkpoint. Any other stored run is trained again as a new run."""
    if not store.has(run_id):
        return False
    store.reap_dead()
    record = store.get(run_id)
    return record.status in RESUMABLE and bool(record.artifacts) and has_checkpoint(Path(record.artifacts or ""))


def _interrupted() -> bool:
    """Whether the exception being handled is Ctrl-C (its run id stays in IN_PROGRESS for the message)."""
    import sys

    return isinstance(sys.exc_info()[1], KeyboardInterrupt)
