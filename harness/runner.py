"""One run: spec -> trained model -> metrics, predictions, artifacts and one stored record."""

from __future__ import annotations

import json
import secrets
import shutil
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
from harness.backend import environment
from harness.config import RunSpec
from harness.data import IMAGE_SHAPE, Dataset
from harness.feed import ImageBatches
from harness.metrics import binary_metrics
from harness.progress import RichProgress
from harness.registry import build_model
from harness.splits import Split, make_split
from harness.store import RunRecord, RunStore
from harness.submission import build_submission, write_submission
from harness.train import compile_model, fit, with_rescaling


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
        self._splits: dict[Any, Split] = {}

    def split_for(self, spec: RunSpec) -> Split:
        key = (spec.data.protocol, spec.data.sample, spec.data.seed, spec.data.val_fraction)
        if key not in self._splits:
            self._splits[key] = make_split(self.dataset, spec.data)
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
        split = self.split_for(spec)
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
            n_train=len(split.train),
            n_val=len(split.val),
            dataset=str(self.dataset.root),
            synthetic=self.dataset.synthetic,
            backend=env["backend"],
            environment=env,
            artifacts=str(folder),
        )
        write_text(folder / "spec.json", json.dumps(spec.to_dict(), indent=2, default=str))
        try:
            values = self._train_and_predict(spec, split, folder, callbacks)
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
            keras.backend.clear_session()  # keep memory flat across many runs in one process
        return self.store.get(run_id)

    def _train_and_predict(
        self, spec: RunSpec, split: Split, folder: Path, callbacks: Sequence[keras.callbacks.Callback]
    ) -> dict[str, Any]:
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        train_set = self.dataset.train
        model = with_rescaling(build_model(spec.architecture, IMAGE_SHAPE, **spec.arch_kwargs))
        compile_model(model, spec.training)
        batch = spec.training.batch_size
        train = ImageBatches(train_set.images, split.train, train_set.labels, batch, shuffle=True, seed=spec.seed)
        val = ImageBatches(train_set.images, split.val, train_set.labels, batch)
        extra = list(callbacks)
        if self.progress:
            extra.append(RichProgress(spec.architecture, spec.training.epochs, self.console))
        result = fit(model, train, val, spec.training, extra)

        val_probs = predict(model, train_set.images, split.val, spec.training.predict_batch_size)
        val_labels = train_set.labels[split.val]
        metrics = binary_metrics(val_labels, val_probs)

        with atomic_path(folder / "model.keras") as tmp:
            model.save(tmp)
        history = result.history
        with atomic_path(folder / "history.csv") as tmp:
            history.to_csv(tmp, index=False)
        with atomic_path(folder / "val_predictions.csv") as tmp:
            pd.DataFrame({"id": train_set.ids[split.val], "label": val_labels, "probability": val_probs}).to_csv(
                tmp, index=False, float_format="%.6f"
            )
        title = f"{spec.architecture} ({folder.name})"
        plots.learning_curve(history, title, folder / "learning_curve.png", result.best_epoch)
        plots.roc(val_labels, val_probs, title, folder / "roc.png")

        submission = self.predict_submission(model, spec.training.predict_batch_size)
        write_submission(submission, folder / "submission.csv")
        return {
            **metrics,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "parameters": int(model.count_params()),
            "submission": str(folder / "submission.csv"),
        }

    def predict_submission(self, model: keras.Model, batch_size: int) -> pd.DataFrame:
        test = self.dataset.test
        probs = predict(model, test.images, np.arange(len(test)), batch_size)
        return build_submission(list(test.ids), probs, self.dataset.submission_ids)


def predict(model: keras.Model, images: np.ndarray, indices: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities for `images[indices]`, in that order, in large batches."""
    batches = ImageBatches(images, indices, batch_size=batch_size)
    return np.asarray(model.predict(batches, verbose=0), dtype=np.float64).reshape(-1)


def remove_artifacts(record: RunRecord) -> None:
    if record.artifacts:
        shutil.rmtree(record.artifacts, ignore_errors=True)
