"""Stain normalisation at inference: each image's haematoxylin and eosin densities matched to the training set's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.training.augmentation import HED_FROM_RGB, RGB_FROM_HED

# A pixel is stained tissue, not glass, when its mean optical density over R, G, B exceeds this (Macenko et al.'s
# beta). An image with too few tissue pixels (mostly glass, a blank patch) is left as it is: its statistics are noise.
TISSUE_OD = 0.15
MIN_TISSUE = 0.05
REFERENCE_IMAGES = 2000  # training images the reference is measured on (a seeded sample): a second on a CPU
_EPS = 1e-3


@dataclass(frozen=True)
class StainReference:
    """The typical per-image mean and spread of the haematoxylin and eosin optical densities (Reinhard et al.'s
    colour transfer, done in Ruifrok and Johnston's stain space rather than in L*a*b*)."""

    mean: tuple[float, float]
    std: tuple[float, float]

    @classmethod
    def of(cls, images: np.ndarray, seed: int = 0) -> StainReference:
        """The median per-image statistics of up to REFERENCE_IMAGES of `images` (uint8, N x H x W x 3)."""
        if len(images) > REFERENCE_IMAGES:
            pick = np.sort(np.random.default_rng(seed).choice(len(images), REFERENCE_IMAGES, replace=False))
            images = images[pick]
        stats = [
            s
            for start in range(0, len(images), 512)  # a chunk's densities are 113 MB of float32
            for s in map(_statistics, *_stains(np.asarray(images[start : start + 512])))
            if s is not None
        ]
        if not stats:
            raise ValueError("no image has enough stained tissue to measure a stain reference from")
        mean, std = np.median(np.array(stats), axis=0)
        return cls((float(mean[0]), float(mean[1])), (float(std[0]), float(std[1])))


def _stains(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB -> float32 stain densities (N, pixels, [H, E, D]), with optical density -ln((I + 1) / 256), and
    the tissue mask (N, pixels) from that same optical density."""
    od = -np.log((images.reshape(len(images), -1, 3).astype(np.float32) + 1.0) / 256.0)
    return od @ HED_FROM_RGB.astype(np.float32), od.mean(axis=-1) > TISSUE_OD


def _statistics(stains: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """One image's (mean, std) of H and E over its tissue; None for an image that is mostly glass."""
    if tissue.mean() < MIN_TISSUE:
        return None
    he = stains[tissue, :2]
    return he.mean(axis=0), he.std(axis=0)


def normalise(images: np.ndarray, reference: StainReference) -> np.ndarray:
    """`images` (uint8, N x H x W x 3) with each one's tissue H and E densities standardised, then given the
    reference's mean and spread; DAB and the glass are kept. Returns new uint8 images of the same shape."""
    stains, tissues = _stains(images)
    target_mean = np.array(reference.mean, dtype=np.float32)
    target_std = np.array(reference.std, dtype=np.float32)
    for image, tissue in zip(stains, tissues, strict=True):
        measured = _statistics(image, tissue)
        if measured is not None:
            mean, std = measured
            image[tissue, :2] = (image[tissue, :2] - mean) / np.maximum(std, _EPS) * target_std + target_mean
    od = stains @ RGB_FROM_HED.astype(np.float32)
    rgb = np.clip(np.rint(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)
    return rgb.reshape(images.shape)


def normalise_all(images: np.ndarray, reference: StainReference, chunk: int = 1024) -> np.ndarray:
    """`normalise` over a whole image set, a chunk at a time (the set may be a memory-mapped cache): one copy, so
    that every TTA view reads it (the statistics do not change under flips and rotations)."""
    out = np.empty(images.shape, dtype=np.uint8)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = normalise(np.asarray(images[start : start + chunk]), reference)
    return out
