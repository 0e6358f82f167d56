"""Approximate slide groups for patches without slide ids: stain statistics clustered, near-duplicates joined."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import KMeans

from harness.atomic import atomic_path

if TYPE_CHECKING:
    from harness.data import Dataset

# About this many patches per derived group. PCam draws ~260k training patches from a few hundred slides, so a
# slide holds hundreds of patches; a sample of N patches then holds at most N/100 slides' worth of distinct stains.
IMAGES_PER_GROUP = 100
FEATURES_VERSION = 1  # bump when stain_features changes: the cached groups are keyed by it
_CHUNK = 512
_TISSUE_OD = 0.3  # summed optical density above which a pixel is stained tissue, not glass (Macenko et al. use 0.15)


def stain_features(images: np.ndarray) -> np.ndarray:
    """Per image, 9 numbers that vary more between slides than within one: per RGB channel, the glass's brightness
    (90th percentile), and the mean and spread of the optical density of the stained (tissue) pixels.

    Computed at half resolution, in chunks, straight from the uint8 cache.
    """
    out = np.zeros((len(images), 9), dtype=np.float32)
    for lo in range(0, len(images), _CHUNK):
        x = np.asarray(images[lo : lo + _CHUNK], dtype=np.float32)
        n, h, w, _ = x.shape
        x = x[:, : h - h % 2, : w - w % 2].reshape(n, h // 2, 2, w // 2, 2, 3).mean(axis=(2, 4)).reshape(n, -1, 3)
        od = -np.log((x + 1.0) / 256.0)
        tissue = od.sum(axis=2) > _TISSUE_OD
        # A patch with (almost) no tissue falls back to all its pixels, so it still gets finite statistics.
        tissue[tissue.sum(axis=1) < 16] = True
        weight = tissue[..., None].astype(np.float32)
        count = weight.sum(axis=1)
        mean = (od * weight).sum(axis=1) / count
        spread = np.sqrt(np.maximum(((od - mean[:, None]) ** 2 * weight).sum(axis=1) / count, 0))
        out[lo : lo + n] = np.concatenate([np.percentile(x, 90, axis=1) / 255.0, mean, spread], axis=1)
    return out


def cluster(features: np.ndarray, n_groups: int, seed: int = 0) -> np.ndarray:
    """k-means on standardised features: a cluster number per image (deterministic for a seed)."""
    n_groups = int(min(max(n_groups, 1), len(features)))
    if n_groups == 1:
        return np.zeros(len(features), dtype=np.int64)
    std = features.std(axis=0)
    z = (features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)
    model = KMeans(n_clusters=n_groups, n_init=3, random_state=seed)
    return model.fit_predict(z.astype(np.float64)).astype(np.int64)


def join(clusters: np.ndarray, duplicates: np.ndarray) -> np.ndarray:
    """Groups that are unions of clusters: two clusters holding copies of one image (exact or near) become one,
    so a split by group never separates near-duplicates. Numbered 0..G-1."""
    n = len(clusters)
    cluster_ids = np.unique(clusters, return_inverse=True)[1].reshape(-1)
    dup_ids = np.unique(duplicates, return_inverse=True)[1].reshape(-1)
    n_clusters = int(cluster_ids.max()) + 1 if n else 0
    # A bipartite graph: image i -- its cluster node, image i -- its duplicate-group node.
    rows = np.r_[np.arange(n), np.arange(n)]
    cols = np.r_[n + cluster_ids, n + n_clusters + dup_ids]
    size = n + n_clusters + (int(dup_ids.max()) + 1 if n else 0)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    labels = connected_components(graph, directed=False)[1][:n]
    return np.unique(labels, return_inverse=True)[1].reshape(-1).astype(np.int64)


def slide_groups(images: np.ndarray, duplicates: np.ndarray, images_per_group: int = IMAGES_PER_GROUP) -> np.ndarray:
    """A group per image: about len(images) / images_per_group stain clusters, joined along duplicate groups."""
    n_groups = max(1, round(len(images) / images_per_group))
    return join(cluster(stain_features(images), n_groups), duplicates)


def dataset_slide_groups(
    dataset: Dataset, duplicates: np.ndarray, images_per_group: int = IMAGES_PER_GROUP
) -> np.ndarray:
    """slide_groups of every training image, cached beside the decoded images (the cache is keyed by the data's
    fingerprint), so every split and every sample of one data folder sees the same groups."""
    # Keyed by the duplicate groups too: exact-only and near-duplicate groups join clusters differently.
    digest = hashlib.blake2b(np.ascontiguousarray(duplicates, dtype=np.int64).tobytes(), digest_size=4).hexdigest()
    cached = dataset.cache_path / f"train_slide_groups_v{FEATURES_VERSION}_{images_per_group}_{digest}.npy"
    try:
        groups = np.load(cached)
        if len(groups) == len(duplicates):
            return groups
    except (OSError, ValueError):
        pass
    groups = slide_groups(dataset.train.images, duplicates, images_per_group)
    with atomic_path(cached) as tmp, open(tmp, "wb") as handle:
        np.save(handle, groups)
    return groups
