"""The eight flips and rotations of a square patch, and which of them test-time augmentation averages."""

from __future__ import annotations

import numpy as np


def dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """Element k (0..7) of the dihedral group applied to a batch (N, H, W, C): k % 4 quarter turns, then a mirror."""
    out = np.rot90(images, k % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if k >= 4 else out)


# Which dihedral elements `--tta n` averages over: 1 = none, 2 = + mirror, 4 = the rotations, 8 = all.
TTA_TRANSFORMS = {1: (0,), 2: (0, 4), 4: (0, 1, 2, 3), 8: tuple(range(8))}
TTA_VIEWS = tuple(TTA_TRANSFORMS)  # the one list of --tta values: settings, flags and checks read it
