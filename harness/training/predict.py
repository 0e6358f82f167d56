"""`harness predict`: a saved .keras model -> a validated Kaggle submission; model files load in safe mode only."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from harness.backend import fused_elementwise
from harness.data.submission import build_submission, write_submission
from harness.errors import HarnessError
from harness.store.runs import redact
from harness.terminal.progress import PHASE_IMAGES, phase
from harness.training.inference import predict_probabilities
from harness.training.portable import load_model_safely
from harness.training.stain_norm import StainReference, normalise_all
from harness.workspace import Workspace

# A run's model is <results>/runs/<run_id>/model.keras, or runs/<run_id>/fold<k>/model.keras in K-fold runs.
_FOLD = re.compile(r"fold\d+")


def run_data_folder(model_path: Path, workspace: Workspace) -> Path:
    """The data folder a run's model was trained on, from the run's record; without one, --data is required."""
    folder = model_path.resolve().parent
    if _FOLD.fullmatch(folder.name):
        folder = folder.parent
    if model_path.name == "model.keras" and folder.parent.name == "runs":
        store = workspace.store()
        if store.has(folder.name):
            dataset = store.get(folder.name).dataset
            if dataset:
                message = f"predicting the test set of {dataset}, the data run {folder.name} was trained on"
                workspace.console.print(message, highlight=False, soft_wrap=True)
                return Path(dataset)
    raise HarnessError(
        f"harness predict {model_path} needs --data DIR: it is not the model.keras of a run in"
        f" {redact(workspace.storage_url)}, so the test set it is meant for is unknown"
    )


def predict_submission(
    model_path: Path,
    workspace: Workspace,
    out: Path,
    tta: int = 1,
    stain_normalise: bool = False,
    named: bool = False,
    progress: bool = True,
) -> Path:
    """Predict the workspace's test images with a saved model; validate, then write the submission atomically.

    Without --data, the test set is that of the data the model's run was trained on (never the demo's by default).
    A (N, 2) output is read as a two-class softmax, [p(class 0), p(class 1)], and its column 1 is used.
    `stain_normalise` first matches each test image's stain densities to the training images' (stain_norm).
    """
    model = load_model_safely(model_path)
    if workspace.data is None:
        workspace.data = run_data_folder(model_path, workspace)
    dataset = workspace.dataset(progress=False)
    images = dataset.test.images
    if stain_normalise:
        try:
            reference = StainReference.of(dataset.train.images)
        except ValueError as exc:
            raise HarnessError(f"--stain-normalise: {dataset.root / 'train'}: {exc}") from None
        images = normalise_all(images, reference)
    label = f"predicting {dataset.root / 'test'}" + (f" with TTA {tta}" if tta > 1 else "")
    live = progress and len(dataset.test) * tta >= PHASE_IMAGES  # a few seconds' work needs no progress lines
    try:
        with (
            fused_elementwise(),
            phase(workspace.console, label, len(dataset.test) * tta, live, quiet=not live) as advance,
        ):
            # TensorFlow: XLA fuses the element-wise ops oneDNN leaves unfused (PReLU)
            probabilities = predict_probabilities(
                model, images, np.arange(len(dataset.test)), tta=tta, two_class_softmax=True, advance=advance
            )
    except HarnessError as exc:  # an output that its declared shape did not give away
        raise HarnessError(f"{model_path}: {exc}") from None
    submission = build_submission(list(dataset.test.ids), probabilities, dataset.submission_ids)
    return write_submission(submission, out, dataset.submission_ids, named=named)
