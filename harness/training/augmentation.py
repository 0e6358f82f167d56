"""Augmentation as Keras layers: dihedral flips and rotations, HED stain and colour jitter, crops."""

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


# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB; columns: the optical density each puts on
# R, G, B), as skimage.color.rgb2hed uses them. Optical density is -ln(I / I_max) (Beer-Lambert), so
# od_rgb = stains @ RGB_FROM_HED and stains = od_rgb @ HED_FROM_RGB.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype="float64")
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
MIN_INTENSITY = 1e-6  # skimage's floor: black pixels get a large but finite optical density


def _float32(kwargs: dict) -> dict:
    # Logarithms and exponentials of pixel ratios need float32 even when the model computes in float16.
    kwargs.setdefault("dtype", "float32")
    return kwargs


@keras.saving.register_keras_serializable(package="harness")
class RandomHEDJitter(keras.layers.Layer):
    """Stain augmentation of Tellez et al. 2019: per image, scale and shift the H, E and DAB optical densities.

    RGB -> optical density -> colour deconvolution into stain concentrations (Ruifrok & Johnston) -> each
    stain times 1 + U(-sigma, sigma), plus U(-bias, bias) -> back to RGB, clipped to `value_range`. Stain
    concentrations are in optical-density units (natural log), so a bias of 0.1 tints white background by
    about 7 % in red and green. Identity at inference.
    """

    def __init__(
        self,
        sigma: float,
        bias: float,
        value_range: tuple[float, float] = (0.0, 255.0),
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**_float32(kwargs))
        self.sigma = float(sigma)
        self.bias = float(bias)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def factors(self, batch):
        """One draw of (scale, shift), each (batch, 1, 1, 3) over H, E, DAB; `call` uses exactly this draw."""
        shape = (batch, 1, 1, 3)
        scale = 1.0 + keras.random.uniform(shape, -self.sigma, self.sigma, seed=self.seed_generator)
        shift = keras.random.uniform(shape, -self.bias, self.bias, seed=self.seed_generator)
        return scale, shift

    def call(self, images, training=None):  # type: ignore[override]
        if not training:
            return images
        scale, shift = self.factors(ops.shape(images)[0])
        stains = rgb_to_hed(images, self.value_range)
        return hed_to_rgb(stains * scale + shift, self.value_range)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "sigma": self.sigma,
            "bias": self.bias,
            "value_range": self.value_range,
            "seed": self.seed,
        }


def rgb_to_hed(images, value_range: tuple[float, float] = (0.0, 255.0)):
    """Haematoxylin, eosin and DAB concentrations (optical density) of RGB `images` in `value_range`."""
    low, high = value_range
    intensity = ops.maximum((ops.cast(images, "float32") - low) / (high - low), MIN_INTENSITY)
    return ops.matmul(-ops.log(intensity), ops.convert_to_tensor(HED_FROM_RGB, "float32"))


def hed_to_rgb(stains, value_range: tuple[float, float] = (0.0, 255.0)):
    """The RGB image in `value_range` that stain concentrations `stains` transmit (the inverse of rgb_to_hed)."""
    low, high = value_range
    od = ops.matmul(stains, ops.convert_to_tensor(RGB_FROM_HED, "float32"))
    return ops.clip(low + ops.exp(-od) * (high - low), low, high)


@keras.saving.register_keras_serializable(package="harness")
class RandomSaturationScale(keras.layers.Layer):
    """Per image, HSV saturation times 1 + U(-factor, factor) (at most 1), hue and value kept; identity at inference.

    Closed form, without an HSV round trip: with V the largest channel, each channel c becomes V - g (V - c), where
    g is the scale capped so that the smallest channel stays at or above the range's floor.
    """

    def __init__(
        self, factor: float, value_range: tuple[float, float] = (0.0, 255.0), seed: int | None = None, **kwargs
    ) -> None:
        super().__init__(**_float32(kwargs))
        self.factor = float(factor)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def factors(self, batch):
        """One draw of the saturation scale, (batch, 1, 1, 1); `call` uses exactly this draw."""
        return 1.0 + keras.random.uniform((batch, 1, 1, 1), -self.factor, self.factor, seed=self.seed_generator)

    def call(self, images, training=None):  # type: ignore[override]
        if not training:
            return images
        low, high = self.value_range
        x = ops.cast(images, "float32") - low
        value = ops.max(x, axis=-1, keepdims=True)
        chroma = value - ops.min(x, axis=-1, keepdims=True)
        # Saturation chroma / value may rise to 1 at most: cap the scale where it would push a channel below 0.
        cap = ops.where(chroma > 0, value / ops.maximum(chroma, 1e-12), 1.0)
        scale = ops.minimum(self.factors(ops.shape(images)[0]), cap)
        return ops.clip(low + value - scale * (value - x), low, high)  # rounding may stray a hair outside

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range, "seed": self.seed}


def augmentation_layers(config: AugmentConfig, seed: int) -> list[keras.layers.Layer]:
    """The layers that `config` asks for, in order: geometry, then colour, then crop. All act on 0..255 pixels."""
    layers: list[keras.layers.Layer] = []
    if config.dihedral:
        layers.append(RandomDihedral(seed=seed, name="random_dihedral"))
    pixels = (0.0, 255.0)
    # Stain first: it models the lab's staining; brightness, contrast and hue model the scanner after it.
    if config.hed or config.stain_shift:
        layers.append(RandomHEDJitter(config.hed, config.stain_shift, pixels, seed=seed + 5, name="random_hed"))
    if config.saturation:
        layers.append(RandomSaturationScale(config.saturation, pixels, seed=seed + 6, name="random_saturation"))
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
