"""`harness predict`: a saved .keras model -> a validated Kaggle submission; model files load in safe mode only."""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np

from harness.data import IMAGE_SHAPE
from harness.errors import HarnessError
from harness.runner import one_line, predict_probabilities
from harness.submission import build_submission, write_submission
from harness.workspace import Workspace


def load_model_safely(path: Path) -> keras.Model:
    """Load a `.keras` file without running any code it carries: a Lambda layer is refused, not executed."""
    if not path.is_file():
        raise HarnessError(f"model file {path} does not exist")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise HarnessError(f"{path} is not a Keras 3 model file (.keras, a zip archive)")
    # The harness's own layers (augmentation) must be registered to load; importing them runs no file content.
    import harness.augment  # noqa: F401
    from harness.registry import ARCHITECTURES

    ARCHITECTURES.discover()
    try:
        # safe_mode=True is Keras's default; it is spelled out because it is the whole point of this function.
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, KeyError, TypeError... for bad archives
        text = str(exc)
        if "Lambda" in text or "arbitrary code" in text:
            raise HarnessError(
                f"{path}: refused: it holds a Lambda layer (Python code), which safe mode never runs; "
                "rebuild the model without Lambda layers"
            ) from None
        raise HarnessError(f"{path}: cannot load the model ({one_line(exc)[:300]})") from None
    if not isinstance(model, keras.Model):
        raise HarnessError(f"{path} holds a {type(model).__name__}, not a Keras model")
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if shape != IMAGE_SHAPE:
        raise HarnessError(f"{path}: the model takes inputs of shape {shape}, not 96x96x3 pixels")
    return model


def predict_submission(model_path: Path, workspace: Workspace, out: Path, tta: int = 1) -> Path:
    """Predict the workspace's test images with a saved model; validate, then write the submission atomically."""
    model = load_model_safely(model_path)
    dataset = workspace.dataset(progress=False)
    probabilities = predict_probabilities(model, dataset.test.images, np.arange(len(dataset.test)), tta=tta)
    submission = build_submission(list(dataset.test.ids), probabilities, dataset.submission_ids)
    return write_submission(submission, out)
