"""Near-duplicate images by a perceptual hash (pHash), grouped so that a split never separates them."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Two patches whose 64-bit pHashes differ in at most this many bits count as near-duplicates. On the shared
# 20,000-patch PCam sample, random pairs of patches differ in 16 bits or more 99.99% of the time (median 32),
# and <= 4 bits adds 19 pairs to the 1,148 exact-duplicate pairs, mostly of background-only patches. A false
# positive only keeps two images on the same side of a split, so erring towards grouping costs nothing.
NEAR_DUPLICATE_BITS = 4
_BITS = np.uint64(1) << np.arange(64, dtype=np.uint64)


def phash(images: np.ndarray) -> np.ndarray:
    """64-bit perceptual hash per image: grey 32x32, DCT, one bit per low frequency above their median.

    Unlike a gradient hash, flat (blank) patches get noise-driven bits here, so they do not all collide.
    """
    hashes = np.zeros(len(images), dtype=np.uint64)
    for i in range(len(images)):
        grey = cv2.cvtColor(np.asarray(images[i]), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        low = cv2.dct(small)[:8, :8].ravel()
        bits = low > np.median(low[1:])  # the DC term is left out of the median: it is just brightness
        hashes[i] = np.bitwise_or.reduce(_BITS[bits]) if bits.any() else np.uint64(0)
    return hashes


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def near_pairs(hashes: np.ndarray, max_bits: int = NEAR_DUPLICATE_BITS) -> np.ndarray:
    """All pairs (i, j), i < j, whose hashes differ in at most `max_bits` bits.

    Pigeonhole: split the 64 bits into max_bits + 1 bands; two hashes that close agree exactly on at least one
    band, so only images sharing a band value are compared. Linear in practice instead of quadratic.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    bands = np.array_split(np.arange(64), max_bits + 1)
    found: set[tuple[int, int]] = set()
    for band in bands:
        mask = np.uint64(((1 << len(band)) - 1) << int(band[0]))
        keys = hashes & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for lo, hi in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
            members = np.sort(order[lo:hi])
            distance = _popcount(hashes[members][:, None] ^ hashes[members][None, :])
            i, j = np.nonzero(np.triu(distance <= max_bits, k=1))
            found.update(zip(members[i].tolist(), members[j].tolist(), strict=True))
    return np.array(sorted(found), dtype=np.int64).reshape(-1, 2)


def near_duplicate_groups(
    hashes: np.ndarray, exact_groups: np.ndarray, max_bits: int = NEAR_DUPLICATE_BITS
) -> np.ndarray:
    """A group label per image joining exact duplicates and chains of near-duplicates (connected components)."""
    n = len(hashes)
    pairs = near_pairs(hashes, max_bits)
    # Exact duplicates join too, through their first member, whatever their hashes say.
    exact = np.asarray(exact_groups)
    first = np.unique(exact, return_index=True)[1][np.unique(exact, return_inverse=True)[1]]
    rows = np.r_[pairs[:, 0], np.arange(n)]
    cols = np.r_[pairs[:, 1], first]
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)
