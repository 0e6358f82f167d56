"""Probabilities from a model, one per image, in large padded batches and averaged over TTA views: the one prediction
loop that validation, test predictions and `harness predict` share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from harness.data.feed import ImageBatches
from harness.dihedral import TTA_TRANSFORMS
from harness.errors import HarnessError


def predict_probabilities(
    model: keras.Model,
    images: np.ndarray,
    indices: np.ndarray,
    batch_size: int = 512,
    tta: int = 1,
    two_class_softmax: bool = False,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The mean probability over the TTA views of `images[indices]`, in their order, one predict_on_batch a batch.

    The model must output one probability per image, (N, 1) or (N,); with `two_class_softmax`, a (N, 2) softmax
    is also taken, as its column 1 (class 1). Any other output is a HarnessError naming its shape: several values
    per image are never flattened into the list of probabilities.

    A plain loop rather than `model.predict`: on TensorFlow's CPU build, predict's input pipeline stalled for
    seconds at random (half the throughput in 2 of 5 calls, measured on seed_model2). The last batch is padded
    to full size, so no second shape is traced (TensorFlow) or compiled (JAX).
    """
    total = np.zeros(len(indices))
    for k in TTA_TRANSFORMS[tta]:
        batches = ImageBatches(images, indices, batch_size=batch_size, transform=k)
        for i in range(len(batches)):
            x = batches[i]
            n = len(x)
            if n < batch_size and len(batches) > 1:
                x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), dtype=x.dtype)])
            probs = _one_probability_per_image(model.predict_on_batch(x), len(x), two_class_softmax)
            total[i * batch_size : i * batch_size + n] += probs[:n]
            if advance is not None:
                advance(n)  # images predicted, TTA views counted apart (a progress bar's steps)
    return total / len(TTA_TRANSFORMS[tta])


def _one_probability_per_image(output: Any, n: int, two_class_softmax: bool) -> np.ndarray:
    """The (n,) probabilities in one batch's model output, or a HarnessError that names the output's shape."""
    if isinstance(output, dict | list | tuple):
        values = list(output.values()) if isinstance(output, dict) else list(output)
        if len(values) != 1:
            raise HarnessError(f"the model has {len(values)} outputs; one probability per image is needed")
        output = values[0]
    probs = np.asarray(output, dtype=np.float64)
    shape = "(" + ", ".join(["N", *map(str, probs.shape[1:])]) + ")"
    if probs.ndim < 1 or len(probs) != n:
        raise HarnessError(f"the model output has shape {probs.shape} for a batch of {n} images")
    if probs.ndim == 2 and probs.shape[1] == 2 and two_class_softmax:
        if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-2):  # two sigmoids, or logits: column 1 means nothing
            raise HarnessError("the model output has shape (N, 2), but its rows do not sum to 1: not a softmax")
        return probs[:, 1]
    if probs.ndim == 2 and probs.shape[1] == 1:
        return probs[:, 0]
    if probs.ndim != 1:
        allowed = "(N, 1), (N,) or a two-class softmax (N, 2)" if two_class_softmax else "(N, 1) or (N,)"
        raise HarnessError(f"the model output has shape {shape}, not one probability per image: {allowed}")
    return probs
