"""Keras Applications backbones (ResNet50V2, DenseNet121, EfficientNetV2B0, ConvNeXtTiny, MobileNetV3Small) with a
global-average-pooling head, random or pretrained (ImageNet, or a weights file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from harness.cost import Cost
from harness.errors import HarnessError
from harness.registry import ARCHITECTURES, BACKBONE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """One Keras Application: its constructor, the input it expects, its ImageNet file and its size at 96x96."""

    constructor: str  # the name in keras.applications
    inputs: str  # what it expects: "255" (it preprocesses itself), "tf" ([-1, 1]) or "torch" (ImageNet mean/std)
    weights_file: str  # the no-top ImageNet file Keras loads from <keras home>/models/
    weights_folder: str  # its folder under KERAS_WEIGHTS_URL
    parameters: int  # without the head, any input size (a test checks these against the built model)
    features: int  # channels of the last feature map: the head's input
    gmacs_96: float  # forward multiply-accumulates of the backbone on a 96x96 image, in billions
    extra: tuple[tuple[str, Any], ...] = ()  # further constructor arguments


# Sizes measured at 96x96 (parameters do not depend on it). ConvNeXt's pointwise layers are Dense layers applied at
# every position: their MACs count once per position (harness.cost.model_macs counts a Dense layer once).
BACKBONES = {
    "resnet50v2": Backbone(
        "ResNet50V2", "tf", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet",
        23_564_800, 2048, 0.639221760,
    ),
    "densenet121": Backbone(
        "DenseNet121", "torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", "densenet",
        7_037_504, 1024, 0.520372224,
    ),
    "efficientnetv2b0": Backbone(
        "EfficientNetV2B0", "255", "efficientnetv2-b0_notop.h5", "efficientnet_v2", 5_919_312, 1280, 0.132500256
    ),
    "convnext_tiny": Backbone(
        "ConvNeXtTiny", "255", "convnext_tiny_notop.h5", "convnext", 27_820_128, 768, 0.818221824
    ),
    "mobilenet_v3_small": Backbone(
        "MobileNetV3Small", "255", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "mobilenet_v3",
        939_120, 576, 0.010457536,
    ),
    "mobilenet_v3_small_minimalistic": Backbone(
        "MobileNetV3Small", "255", "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5",
        "mobilenet_v3", 441_000, 576, 0.009307584, (("minimalistic", True),),
    ),
}  # fmt: skip


def imagenet_file(backbone: str) -> Path:
    """Where Keras looks for `backbone`'s ImageNet weights: <keras home>/models/<file> ($KERAS_HOME or ~/.keras)."""
    from keras.src.backend.config import keras_home  # Keras's own answer, which honours $KERAS_HOME

    return Path(keras_home()).expanduser() / "models" / BACKBONES[backbone].weights_file


def weights_path(backbone: str, weights: str | None) -> Path | None:
    """The file to load into the backbone: none, the ImageNet file Keras would download, or a path.

    These machines cannot download, so a missing ImageNet file is a one-line error that says where to put it.
    """
    if weights is None or weights == "none":
        return None
    if weights == "imagenet":
        path = imagenet_file(backbone)
        if not path.is_file():
            url = KERAS_WEIGHTS_URL + f"{BACKBONES[backbone].weights_folder}/{path.name}"
            raise HarnessError(
                f"weights=imagenet: {backbone}'s ImageNet weights are not at {path} and cannot be downloaded here;"
                f" fetch {url} on a machine with internet access and copy it to {path}"
                " (or give weights=PATH to a weights file)"
            )
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise HarnessError(f"weights={weights}: no such file (use none, imagenet or the path to a weights file)")
    return path


def preprocessing(kind: str) -> keras.layers.Layer:
    """The harness feeds 0..1 (its pipeline rescales by 1/255); this maps that to what the backbone expects."""
    if kind == "tf":
        return keras.layers.Rescaling(2.0, offset=-1.0, name="to_plus_minus_one")
    if kind == "torch":
        variance = [s**2 for s in IMAGENET_STD]
        return keras.layers.Normalization(mean=list(IMAGENET_MEAN), variance=variance, name="imagenet_normalise")
    return keras.layers.Rescaling(255.0, name="to_0_255")


def build_backbone(backbone: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """The Keras Application without its top, randomly initialised, named BACKBONE (what --freeze-epochs freezes)."""
    entry = BACKBONES[backbone]
    constructor = getattr(keras.applications, entry.constructor)
    options: dict[str, Any] = {"include_top": False, "weights": None, "input_shape": input_shape}
    if entry.inputs == "255":
        options["include_preprocessing"] = True
    model = constructor(**options, **dict(entry.extra))
    model.name = BACKBONE  # after building: EfficientNetV2 looks its blocks up by its own name
    return model


def check_backbone(backbone: str) -> Backbone:
    if backbone not in BACKBONES:
        raise HarnessError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def applications_cost(
    backbone: str = "mobilenet_v3_small", input_shape: tuple[int, int, int] = (96, 96, 3), **_: object
) -> Cost:
    """The family's cost without building it: the backbone's measured size, its MACs scaled by the input's area
    (exact at 96x96; a crop's is an estimate), and the head's dense layer."""
    entry = check_backbone(backbone)
    area = input_shape[0] * input_shape[1] / (96 * 96)
    return Cost(parameters=entry.parameters + entry.features + 1, gmacs=entry.gmacs_96 * area + entry.features / 1e9)


@ARCHITECTURES.register("applications", baseline=False, cost=applications_cost)
def applications(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    backbone: str = "mobilenet_v3_small",
    weights: str | None = None,
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """A Keras Applications backbone (weights none, imagenet or a path), then global average pooling and dropout."""
    entry = check_backbone(backbone)
    path = weights_path(backbone, weights)
    if not 0 <= dropout < 1:
        raise HarnessError(f"dropout must be in [0, 1), got {dropout}")
    body = build_backbone(backbone, input_shape)
    if path is not None:
        try:
            body.load_weights(str(path))
        except (ValueError, OSError) as exc:
            raise HarnessError(f"weights={path}: not {backbone}'s weights without its top ({exc})") from None
    inputs = keras.Input(shape=input_shape)
    x = body(preprocessing(entry.inputs)(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(inputs, outputs, name=name or backbone)
