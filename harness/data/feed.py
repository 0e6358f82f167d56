"""Batches of uint8 images straight from the memory-mapped cache, for fit and predict on any Keras backend."""

from __future__ import annotations

import math

import keras
import numpy as np

from harness.dihedral import dihedral


class ImageBatches(keras.utils.PyDataset):
    """Index-addressed batches over `images[indices]`; uint8 stays uint8 (the model rescales on the device).

    Reading by sorted index keeps memory-map reads close together; the shuffle is a fresh permutation each epoch,
    drawn from a seeded generator so a run is reproducible.
    """

    def __init__(
        self,
        images: np.ndarray,
        indices: np.ndarray,
        labels: np.ndarray | None = None,
        batch_size: int = 50,
        shuffle: bool = False,
        seed: int = 0,
        transform: int = 0,
        steps: int | None = None,
    ) -> None:
        super().__init__()
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.transform = transform  # a dihedral element (0 = identity), for test-time augmentation
        # At most this many batches an epoch: a fraction of an epoch, a fresh random part of it each time when
        # shuffled (equal-compute budgets give a large model less than one pass).
        self.steps = steps
        self._rng = np.random.default_rng(seed)
        self._order = self.indices.copy()
        if shuffle:
            self._order = self._rng.permutation(self.indices)

    def __len__(self) -> int:
        full = math.ceil(len(self.indices) / self.batch_size)
        return min(full, self.steps) if self.steps else full

    def __getitem__(self, batch: int):  # type: ignore[override]
        picked = self._order[batch * self.batch_size : (batch + 1) * self.batch_size]
        order = np.argsort(picked, kind="stable")
        rows = picked[order]
        x = np.asarray(self.images[rows])
        if self.transform:
            x = dihedral(x, self.transform)
        if self.labels is None:
            # Predictions must come back in the caller's order, so undo the sort.
            return x[np.argsort(order, kind="stable")]
        return x, np.asarray(self.labels[rows], dtype=np.float32)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(self.indices)
