"""Portable models: the inference graph a run saves (plain Keras loads it), harness.load_model, and serving exports."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

import keras

from harness.errors import HarnessError, one_line
from harness.training.augment import (
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
    from harness.training.predict import load_model_safely

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
