"""Augmentation as Keras layers (dihedral, colour jitter, crops) and the dihedral transforms of TTA."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from harness.config import AugmentConfig


@keras.saving.register_keras_serializable(package="harness")
class RandomDihedral(keras.layers.Layer):
    """One of the 8 flips and 90-degree rotations of each image, uniformly; identity at inference.

    Tissue has no up or down, so all 8 are equally valid. Three independent coin flips (flip rows, flip columns,
    transpose) reach each of the 8 elements of the dihedral group with equal probability.
    """

    def __init__(self, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):  # type: ignore[override]
        if not training:
            return images
        batch = ops.shape(images)[0]
        coins = keras.random.uniform((3, batch, 1, 1, 1), seed=self.seed_generator) < 0.5
        images = ops.where(coins[0], ops.flip(images, axis=1), images)
        images = ops.where(coins[1], ops.flip(images, axis=2), images)
        return ops.where(coins[2], ops.transpose(images, (0, 2, 1, 3)), images)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="harness")
class RandomCropCentreAtInference(keras.layers.Layer):
    """A random `size` crop in training and the centre crop at inference (Keras' RandomCrop passes it through)."""

    def __init__(self, size: int, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = size
        self.seed = seed
        self.random_crop = keras.layers.RandomCrop(size, size, seed=seed)
        self.centre_crop = keras.layers.CenterCrop(size, size)

    def build(self, input_shape) -> None:  # type: ignore[override]
        self.random_crop.build(input_shape)
        self.centre_crop.build(input_shape)

    def call(self, images, training=None):  # type: ignore[override]
        if training:
            return self.random_crop(images, training=True)
        return self.centre_crop(images)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "seed": self.seed}


def augmentation_layers(config: AugmentConfig, seed: int) -> list[keras.layers.Layer]:
    """The layers that `config` asks for, in order: geometry, then colour, then crop. All act on 0..255 pixels."""
    layers: list[keras.layers.Layer] = []
    if config.dihedral:
        layers.append(RandomDihedral(seed=seed, name="random_dihedral"))
    pixels = (0.0, 255.0)
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=pixels, seed=seed + 1))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=pixels, seed=seed + 2))
    if config.hue:
        layers.append(keras.layers.RandomHue(config.hue, value_range=pixels, seed=seed + 3))
    if config.crop == "random":
        # Random position in training, the centre at inference: the label lives in the centre 32x32.
        layers.append(RandomCropCentreAtInference(config.crop_size, seed=seed + 4, name="random_crop"))
    elif config.crop == "centre":
        layers.append(keras.layers.CenterCrop(config.crop_size, config.crop_size))
    return layers


def dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """Element k (0..7) of the dihedral group applied to a batch (N, H, W, C): k % 4 quarter turns, then a mirror."""
    out = np.rot90(images, k % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if k >= 4 else out)


# Which dihedral elements `--tta n` averages over: 1 = none, 2 = + mirror, 4 = the rotations, 8 = all.
TTA_TRANSFORMS = {1: (0,), 2: (0, 4), 4: (0, 1, 2, 3), 8: tuple(range(8))}
