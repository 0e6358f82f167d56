"""One run: spec -> trained model -> metrics, predictions, artifacts and one stored record."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from rich.console import Console

from harness import plots
from harness.atomic import atomic_path, write_text
from harness.augment import TTA_TRANSFORMS
from harness.backend import environment, forget_traced_gradients
from harness.config import RunSpec
from harness.data import Dataset
from harness.feed import ImageBatches
from harness.metrics import binary_metrics
from harness.progress import RichProgress
from harness.splits import Split, make_splits
from harness.store import RunRecord, RunStore
from harness.submission import build_submission, write_submission
from harness.train import FitResult, build_core, compile_model, fit, model_input_shape, with_input_pipeline


def new_run_id(architecture: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{architecture}-{secrets.token_hex(3)}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")


@dataclass
class Runner:
    """Trains runs against one dataset and one store, writing artifacts under `results_dir/runs/<run_id>/`."""

    dataset: Dataset
    store: RunStore
    results_dir: Path
    progress: bool = True
    console: Console | None = None

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
    ) -> RunRecord:
        """Train, evaluate and predict one spec. Failures are recorded and returned; pruning and Ctrl-C re-raise."""
        run_id = run_id or new_run_id(spec.architecture)
        folder = self.results_dir / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        splits = self.splits_for(spec)
        env = environment()
        self.store.start(
            run_id,
            architecture=spec.architecture,
            origin=spec.origin.kind,
            study=spec.origin.study,
            trial=spec.origin.trial,
            tuner=spec.origin.tuner,
            spec=spec.to_dict(),
            hyperparameters=hyperparameters,
            n_train=len(splits[0].train),
            n_val=sum(len(s.val) for s in splits),
            folds=len(splits),
            tta=spec.training.tta,
            dataset=str(self.dataset.root),
            synthetic=self.dataset.synthetic,
            backend=env["backend"],
            environment=env,
            artifacts=str(folder),
        )
        write_text(folder / "spec.json", json.dumps(spec.to_dict(), indent=2, default=str))
        try:
            values = self._cross_validate(spec, splits, folder, callbacks)
        except KeyboardInterrupt:
            self.store.update(run_id, status="interrupted", error="interrupted by the user (Ctrl-C)")
            raise
        except pruned_exceptions as exc:
            self.store.update(run_id, status="pruned", error=one_line(exc) or "pruned")
            raise
        except Exception as exc:  # a failed run is recorded and the next one goes on
            write_text(folder / "error.txt", traceback.format_exc())
            self.store.update(run_id, status="failed", error=one_line(exc))
        else:
            self.store.update(run_id, status="complete", **values)
        finally:
            # Keep memory flat across many runs in one process (a 50-trial search, a list of architectures).
            keras.backend.clear_session()
            forget_traced_gradients()
        return self.store.get(run_id)

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
            test_probs += predict(model, self.dataset.test.images, np.arange(len(self.dataset.test)), spec) / len(
                splits
            )
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
        submission = build_submission(list(self.dataset.test.ids), test_probs, self.dataset.submission_ids)
        write_submission(submission, folder / "submission.csv")

        spread = pd.DataFrame(fold_metrics)
        values: dict[str, Any] = {key: float(spread[key].mean()) for key in spread}
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
            "submission": str(folder / "submission.csv"),
        }

    def _fit(
        self, spec: RunSpec, split: Split, folder: Path, callbacks: Sequence[keras.callbacks.Callback], label: str
    ) -> tuple[keras.Model, FitResult, np.ndarray]:
        """Build, fit and save one model; return it, its fit and its validation probabilities."""
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        augment = spec.training.augment
        # The architecture's layers compute in the run's precision; the pipeline's input and the output stay float32.
        core = build_core(spec.architecture, spec.training.precision, model_input_shape(augment), **spec.arch_kwargs)
        model = compile_model(with_input_pipeline(core, augment, spec.seed), spec.training)
        train_set = self.dataset.train
        batch = spec.training.batch_size
        train = ImageBatches(train_set.images, split.train, train_set.labels, batch, shuffle=True, seed=spec.seed)
        val = ImageBatches(train_set.images, split.val, train_set.labels, batch)
        extra = list(callbacks)
        if self.progress:
            extra.append(RichProgress(label, spec.training.epochs, self.console))
        result = fit(model, train, val, spec.training, extra)

        probs = predict(model, train_set.images, split.val, spec)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "model.keras") as tmp:
            model.save(tmp)
        with atomic_path(folder / "history.csv") as tmp:
            result.history.to_csv(tmp, index=False)
        plots.learning_curve(
            result.history, f"{label} ({folder.name})", folder / "learning_curve.png", result.best_epoch
        )
        return model, result, probs


def predict(model: keras.Model, images: np.ndarray, indices: np.ndarray, spec: RunSpec) -> np.ndarray:
    """Probabilities for `images[indices]`, in that order, in large batches, averaged over the spec's TTA."""
    return predict_probabilities(model, images, indices, spec.training.predict_batch_size, spec.training.tta)


def predict_probabilities(
    model: keras.Model, images: np.ndarray, indices: np.ndarray, batch_size: int = 512, tta: int = 1
) -> np.ndarray:
    """The mean probability over the TTA views of `images[indices]`, in their order, one predict_on_batch a batch.

    A plain loop rather than `model.predict`: on TensorFlow's CPU build, predict's input pipeline stalled for
    seconds at random (half the throughput in 2 of 5 calls, measured on seed_model2). The last batch is padded
    to full size, so no second shape is traced (TensorFlow) or compiled (JAX).
    """
    total = np.zeros(len(indices))
    for k in TTA_TRANSFORMS[tta]:
        batches = ImageBatches(images, indices, batch_size=batch_size, transform=k)
        for i in range(len(batches)):
            x = batches[i]
            n = len(x)
            if n < batch_size and len(batches) > 1:
                x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), dtype=x.dtype)])
            probs = np.asarray(model.predict_on_batch(x), dtype=np.float64).reshape(-1)
            total[i * batch_size : i * batch_size + n] += probs[:n]
    return total / len(TTA_TRANSFORMS[tta])
