"""Portable models: the inference graph a run saves (plain Keras loads it), harness.load_model, and serving exports."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import zipfile
from pathlib import Path

import keras

from harness.data import IMAGE_SHAPE
from harness.errors import HarnessError, one_line
from harness.training.augmentation import (
    RandomCropCentreAtInference,
    RandomDihedral,
    RandomHEDJitter,
    RandomSaturationScale,
)

# Identity at inference: an inference graph leaves them out, so it holds no class plain Keras does not know.
TRAINING_ONLY = (
    RandomDihedral,
    RandomHEDJitter,
    RandomSaturationScale,
    keras.layers.RandomBrightness,
    keras.layers.RandomContrast,
    keras.layers.RandomHue,
)
EXPORT_FORMATS = {"savedmodel": "tf_saved_model", "onnx": "onnx"}

MB = 1 << 20
# What a model archive may inflate to, checked from the zip's declared sizes before Keras reads a byte of it.
# Keras stores its members uncompressed (a ratio of 1); a config of a few thousand layers is well under 1 MB.
MAX_JSON_MEMBER = 8 * MB  # config.json, metadata.json
MAX_MEMBERS = 1000
MAX_TOTAL = 4096 * MB  # weights of 1 billion float32 parameters: far beyond any PCam model
SLACK = 64 * MB  # besides MAX_INFLATION times the archive's own size
MAX_INFLATION = 16


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


def _shape_text(shape: object) -> str:
    return str(tuple(shape)).replace("None", "N") if isinstance(shape, tuple | list) else str(shape)  # type: ignore[arg-type]


def load_model_safely(path: Path) -> keras.Model:
    """Load a `.keras` file without running any code it carries: a Lambda layer is refused, not executed."""
    if not path.is_file():
        raise HarnessError(f"model file {path} does not exist")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise HarnessError(f"{path} is not a Keras 3 model file (.keras, a zip archive)")
    check_archive(path)
    # The harness's own layers (augmentation) must be registered to load; importing them runs no file content.
    import harness.training.augmentation  # noqa: F401
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


def inference_model(model: keras.Model) -> keras.Model:
    """`model` (pixels -> augmentation -> rescale -> architecture, see train.with_input_pipeline) as the graph it
    computes at inference: training-only layers left out, the random crop as the centre crop it is at inference.

    The architecture and the rescale are the same layer objects, so the weights are shared, not copied.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise HarnessError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs")
    inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="pixels")
    x = inputs
    for layer in model.layers:  # the pipeline is a chain: each layer takes the one before it
        if isinstance(layer, (keras.layers.InputLayer, *TRAINING_ONLY)):
            continue
        if isinstance(layer, RandomCropCentreAtInference):
            x = keras.layers.CenterCrop(layer.size, layer.size, name="centre_crop")(x)
        else:
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def save_model(model: keras.Model, path: str | Path, save_optimizer: bool = False) -> None:
    """Save a run's model to `path`: the inference graph, which plain `keras.saving.load_model` loads; with
    `save_optimizer`, the compiled training graph and its optimiser state (harness.load_model loads it)."""
    (model if save_optimizer else inference_model(model)).save(path)


def load_model(path: str | Path) -> keras.Model:
    """Load any model.keras the harness wrote (uncompiled), older ones with augmentation layers and --save-optimizer
    ones too. Safe mode: no code from the file runs (a Lambda layer is refused). The harness's own layers are
    registered under the package name "harness" (e.g. "harness>RandomDihedral"), which importing this module does.
    """
    return load_model_safely(Path(path))


def export_model(model: keras.Model, destination: Path, fmt: str) -> Path:
    """Write `model`'s inference graph as a serving artefact: a TensorFlow SavedModel folder or an .onnx file.

    Keras's own `Model.export` does the work; what it cannot do on this backend or without a package is a
    HarnessError naming the format, the backend and what is missing.
    """
    if fmt not in EXPORT_FORMATS:
        raise HarnessError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    portable = inference_model(model)
    backend = keras.backend.backend()
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.parent / f".{destination.name}.{secrets.token_hex(4)}.tmp{destination.suffix}"
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):  # Keras prints what it saved
            if fmt == "savedmodel":
                _saved_model(portable, tmp)
            else:
                portable.export(str(tmp), format=EXPORT_FORMATS[fmt], verbose=False)
    except (ImportError, NotImplementedError, ValueError, RuntimeError) as exc:
        _remove(tmp)
        needs = "TensorFlow" if fmt == "savedmodel" else ("torch and onnx" if backend == "torch" else "tf2onnx")
        raise HarnessError(
            f"harness export --format {fmt} does not work on the {backend} backend here: it needs {needs}"
            f" ({one_line(exc)[:200]})"
        ) from None
    except BaseException:
        _remove(tmp)
        raise
    # The finished artefact replaces any earlier one in one rename: a reader never sees half of it.
    old = destination.parent / f".{destination.name}.{secrets.token_hex(4)}.old"
    if destination.exists():
        os.replace(destination, old)
    os.replace(tmp, destination)
    _remove(old)
    return destination


def _saved_model(model: keras.Model, path: Path) -> None:
    """A SavedModel whose `serve` endpoint runs `model` in inference mode.

    Not `model.export(format="tf_saved_model")`: with Keras 3.15 its `serve` ran a trained run's model with dropout
    on (two calls on the same images gave different probabilities); the explicit training=False endpoint does not.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = keras.InputSpec(shape=(None, *model.inputs[0].shape[1:]), dtype="float32")
    archive.add_endpoint("serve", lambda pixels: model(pixels, training=False), input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
