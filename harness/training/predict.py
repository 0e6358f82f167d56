"""`harness predict`: a saved .keras model -> a validated Kaggle submission; model files load in safe mode only."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import keras
import numpy as np

from harness.backend import fused_elementwise
from harness.data import IMAGE_SHAPE
from harness.errors import HarnessError, one_line
from harness.ranking.submission import build_submission, write_submission
from harness.store.runs import redact
from harness.training.runner import predict_probabilities
from harness.training.stain_norm import StainReference, normalise_all
from harness.workspace import Workspace

MB = 1 << 20
# What a model archive may inflate to, checked from the zip's declared sizes before Keras reads a byte of it.
# Keras stores its members uncompressed (a ratio of 1); a config of a few thousand layers is well under 1 MB.
MAX_JSON_MEMBER = 8 * MB  # config.json, metadata.json
MAX_MEMBERS = 1000
MAX_TOTAL = 4096 * MB  # weights of 1 billion float32 parameters: far beyond any PCam model
SLACK = 64 * MB  # besides MAX_INFLATION times the archive's own size
MAX_INFLATION = 16

# A run's model is <results>/runs/<run_id>/model.keras, or runs/<run_id>/fold<k>/model.keras in K-fold runs.
_FOLD = re.compile(r"fold\d+")


def check_archive(path: Path) -> None:
    """Refuse a model archive whose members would inflate beyond sane model sizes (a zip bomb), from the sizes the
    zip declares: zipfile never yields more than the declared size, so this bounds what loading can read."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise HarnessError(f"{path} is not a Keras 3 model file (.keras, a zip archive): {one_line(exc)}") from None
    if len(members) > MAX_MEMBERS:
        raise HarnessError(f"{path}: refused: {len(members):,} archive members (a Keras model has a few)")
    for member in members:
        if member.filename.endswith(".json") and member.file_size > MAX_JSON_MEMBER:
            raise HarnessError(
                f"{path}: refused: {member.filename} would inflate to {member.file_size / MB:,.1f} MB"
                f" (at most {MAX_JSON_MEMBER // MB} MB is read from a model's .json members)"
            )
    total = sum(m.file_size for m in members)
    limit = min(MAX_TOTAL, SLACK + MAX_INFLATION * path.stat().st_size)
    if total > limit:
        raise HarnessError(
            f"{path}: refused: its members would inflate to {total / MB:,.1f} MB from a"
            f" {path.stat().st_size / MB:,.1f} MB archive (at most {SLACK // MB} MB + {MAX_INFLATION}x the archive's"
            f" size, {MAX_TOTAL // MB:,} MB in all, is read from a model archive)"
        )


def load_model_safely(path: Path) -> keras.Model:
    """Load a `.keras` file without running any code it carries: a Lambda layer is refused, not executed."""
    if not path.is_file():
        raise HarnessError(f"model file {path} does not exist")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise HarnessError(f"{path} is not a Keras 3 model file (.keras, a zip archive)")
    check_archive(path)
    # The harness's own layers (augmentation) must be registered to load; importing them runs no file content.
    import harness.training.augment  # noqa: F401
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
    check_shapes(model, path)
    return model


def _shape_text(shape: object) -> str:
    return str(tuple(shape)).replace("None", "N") if isinstance(shape, tuple | list) else str(shape)  # type: ignore[arg-type]


def check_shapes(model: keras.Model, path: Path) -> None:
    """96x96x3 pixels in, one probability per image out ((N, 1), (N,), or a two-class softmax (N, 2)), before any
    image is predicted."""
    try:
        input_shape, output_shape = model.input_shape, model.output_shape
    except AttributeError:  # a Sequential model saved before it was built has neither
        raise HarnessError(
            f"{path}: the model has no input shape (a Sequential model saved unbuilt); "
            "start it with keras.Input((96, 96, 3)) and save it again"
        ) from None
    shape = tuple(input_shape[1:]) if not isinstance(input_shape, list) else None
    if shape != IMAGE_SHAPE:
        raise HarnessError(f"{path}: the model takes inputs of shape {shape}, not 96x96x3 pixels")
    outputs = model.outputs or []
    if len(outputs) != 1:
        raise HarnessError(f"{path}: the model has {len(outputs)} outputs; harness predict needs one")
    per_image = tuple(output_shape[1:]) if isinstance(output_shape, tuple) else None
    if per_image not in ((), (1,), (2,), (None,)):
        raise HarnessError(
            f"{path}: the model outputs shape {_shape_text(output_shape)}, not one probability per image:"
            " (N, 1), (N,) or a two-class softmax (N, 2)"
        )


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
    model_path: Path, workspace: Workspace, out: Path, tta: int = 1, stain_normalise: bool = False
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
    try:
        with fused_elementwise():  # TensorFlow: XLA fuses the element-wise ops oneDNN leaves unfused (PReLU)
            probabilities = predict_probabilities(
                model, images, np.arange(len(dataset.test)), tta=tta, two_class_softmax=True
            )
    except HarnessError as exc:  # an output that its declared shape did not give away
        raise HarnessError(f"{model_path}: {exc}") from None
    submission = build_submission(list(dataset.test.ids), probabilities, dataset.submission_ids)
    return write_submission(submission, out, dataset.submission_ids)
