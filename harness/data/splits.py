"""Train/validation splits: the seed notebook's protocol, a stratified split that keeps duplicates together, and a
grouped split that keeps approximate slides (harness.data.slide_groups) together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from sklearn.utils import shuffle

from harness.atomic import atomic_path
from harness.data.near_duplicates import near_duplicate_groups, phash
from harness.data.slide_groups import dataset_slide_groups
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import DataConfig
    from harness.data import Dataset

# The notebook drops these two ids (the first is Kaggle's all-black patch).
SEED_DROPPED_IDS = ("9369c7278ec8bcc6c880d99194de09fc2bd4efbe", "3147e34a392cc94d7071dc31fb56c76c8c7a4d87")
SEED_TEST_SIZE = 0.15
SEED_SAMPLE_STATE = 101  # the notebook's random_state for sample() and train_test_split()


@dataclass(frozen=True, eq=False)
class Split:
    """Indices into the labelled images, the protocol that chose them and notes on what it did."""

    train: np.ndarray
    val: np.ndarray
    protocol: str
    notes: list[str] = field(default_factory=list)


def sample_indices(labels: np.ndarray, n: int | None, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """A stratified random subset of `n` indices (sorted); all indices when `n` is None or not smaller than the data.

    With `groups`, whole duplicate groups are taken or left, so a subset never holds only some copies of an image.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n is not None and n > total:  # never recorded as a sample that was not drawn
        raise HarnessError(
            f"--sample {n:,} is more than the {total:,} labelled images there are; leave --sample out to use them all"
        )
    if n is None or n == total:
        return np.arange(total)
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise HarnessError(f"--sample {n} is too small to hold both classes; use at least {len(classes)}")
    quotas = _apportion(n, counts)
    inv, sizes, group_label = _groups(labels, groups)
    rng = np.random.default_rng(seed)
    chosen = [
        _take_groups(rng.permutation(np.flatnonzero(group_label == c)), sizes, q)
        for c, q in zip(classes, quotas, strict=True)
    ]
    return np.flatnonzero(np.isin(inv, np.concatenate(chosen)))


def seed_protocol_split(ids: np.ndarray, labels: np.ndarray, seed: int, test_size: float = SEED_TEST_SIZE) -> Split:
    """The notebook's PrepareData, call for call: drop two ids, balance the classes, shuffle, split 85/15.

    The notebook calls `shuffle(df)` with no random_state, i.e. numpy's global RandomState
    (sklearn's check_random_state(None)). `seed` S is passed as `shuffle(df, random_state=S)`, which draws
    the same permutation as the notebook run after `np.random.seed(S)`: this makes the notebook reproducible.
    Returned indices are positions in `ids`, in the notebook's row order.
    """
    df_label = pd.DataFrame({"id": np.asarray(ids, dtype=str), "label": np.asarray(labels).astype(np.int64)})
    notes = []
    dropped = [i for i in SEED_DROPPED_IDS if (df_label["id"] == i).any()]
    for drop in SEED_DROPPED_IDS:
        df_label = df_label[df_label["id"] != drop]
    if dropped:
        notes.append(f"dropped {len(dropped)} id{'s' if len(dropped) > 1 else ''} listed by the notebook")
    counts = df_label["label"].value_counts()
    n0, n1 = int(counts.get(0, 0)), int(counts.get(1, 0))
    if n1 == 0:
        raise HarnessError("the seed protocol needs label-1 images and there are none; use --protocol stratified")
    if n0 < n1:
        raise HarnessError(
            f"the seed protocol samples as many label-0 as label-1 images, but there are {n0} label-0 and {n1} label-1"
            " images (the notebook's sample() fails here); use --protocol stratified"
        )
    df_0 = df_label[df_label["label"] == 0].sample(n1, random_state=SEED_SAMPLE_STATE)
    df_1 = df_label[df_label["label"] == 1].sample(n1, random_state=SEED_SAMPLE_STATE)
    df_label = pd.concat([df_0, df_1], axis=0).reset_index(drop=True)
    df_label = shuffle(df_label, random_state=seed)
    df_train, df_val = train_test_split(df_label, test_size=test_size, random_state=SEED_SAMPLE_STATE)
    if n0 > n1:
        notes.append(f"balanced: kept {n1} of {n0} label-0 images to match {n1} label-1 images")
    notes.append(f"shuffled as the notebook after np.random.seed({seed}); train_test_split(test_size={test_size:g})")
    position = pd.Index(np.asarray(ids, dtype=str))
    return Split(
        train=position.get_indexer(df_train["id"]).astype(np.int64),
        val=position.get_indexer(df_val["id"]).astype(np.int64),
        protocol="seed",
        notes=notes,
    )


def stratified_split(labels: np.ndarray, groups: np.ndarray | None, val_fraction: float, seed: int) -> Split:
    """All images, stratified by label, with each group of identical images wholly in train or wholly in val.

    Method: per class (a group's class is its first image's label), shuffle the groups with `seed` and move
    them to validation while they fit the class's share round(val_fraction * class size); singletons fill the
    rest, so each class's share is met exactly unless large groups get in the way.
    """
    labels = np.asarray(labels)
    inv, sizes, group_label = _groups(labels, groups)
    rng = np.random.default_rng(seed)
    val_groups = []
    for c in np.unique(group_label):
        members = np.flatnonzero(group_label == c)
        n_c = int(sizes[members].sum())
        target = round(val_fraction * n_c)
        if len(members) >= 2:
            target = min(max(target, 1), n_c - 1)  # both sides get each class when they can
        val_groups.append(_take_groups(rng.permutation(members), sizes, target))
    in_val = np.isin(inv, np.concatenate(val_groups)) if val_groups else np.zeros(len(labels), bool)
    n_multi = int((sizes > 1).sum())
    notes = [
        f"stratified by label: {int(in_val.sum())} of {len(labels)} images in validation"
        f" ({in_val.mean():.1%}, asked {val_fraction:.1%})",
        f"{n_multi} groups of identical or near-identical images kept whole on one side",
    ]
    return Split(train=np.flatnonzero(~in_val), val=np.flatnonzero(in_val), protocol="stratified", notes=notes)


# A grouped split needs at least this many groups per fold: with fewer, one large group decides the label balance.
MIN_GROUPS_PER_FOLD = 2


def grouped_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int) -> Split:
    """Whole groups (approximate slides) in train or in validation, label shares kept as far as groups allow.

    Method: StratifiedGroupKFold with K = round(1 / val_fraction) shuffled folds (seeded); the first fold validates,
    so validation holds about 1/K of the images (15% asked: K = 7, about 14%).
    """
    labels = np.asarray(labels)
    k = max(2, round(1 / val_fraction))
    return _group_folds(labels, groups, k, seed, "--protocol grouped")[0]


def _group_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int, flag: str) -> list[Split]:
    """K folds of whole groups by StratifiedGroupKFold; a one-line refusal when there are too few groups."""
    n_groups = len(np.unique(groups))
    if n_groups < MIN_GROUPS_PER_FOLD * k:
        raise HarnessError(
            f"{flag}: the {len(labels)} images form only {n_groups} approximate slide groups, and {k} folds need at"
            f" least {MIN_GROUPS_PER_FOLD * k}; use a larger --sample or a smaller --group-size"
        )
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = []
    share = labels.mean()
    for train, val in folds.split(np.zeros(len(labels)), labels, groups):
        notes = [
            f"grouped by approximate slide: {len(val)} of {len(labels)} images ({len(val) / len(labels):.1%}) in"
            f" {len(np.unique(groups[val]))} of {n_groups} groups validate; label 1 is {labels[val].mean():.1%}"
            f" of validation, {share:.1%} overall"
        ]
        out.append(Split(train=train, val=val, protocol="grouped", notes=notes))
    return out


def slide_groups_of(dataset: Dataset, config: DataConfig, duplicates: np.ndarray) -> np.ndarray:
    """The approximate slide group of every training image (cached with the decoded images)."""
    return dataset_slide_groups(dataset, duplicates, config.group_size)


def duplicate_groups(dataset: Dataset, near: bool) -> np.ndarray:
    """A group per train image: identical pixels share one; with `near`, so do near-duplicates (pHash)."""
    exact = dataset.duplicate_group_of_train()
    if not near:
        return exact
    cached = dataset.cache_path / "train_phash.npy"
    try:
        hashes = np.load(cached)
    except (OSError, ValueError):
        hashes = phash(dataset.train.images)
        with atomic_path(cached) as tmp, open(tmp, "wb") as handle:
            np.save(handle, hashes)
    return near_duplicate_groups(hashes, exact)


def kfold_splits(dataset: Dataset, config: DataConfig) -> list[Split]:
    """K stratified folds of the (sampled) images; every duplicate or near-duplicate group stays in one fold."""
    labels = np.asarray(dataset.train.labels)
    groups = duplicate_groups(dataset, config.near_duplicates)
    subset = sample_indices(labels, config.sample, config.seed, groups)
    if np.bincount(labels[subset], minlength=2).min() < config.folds:
        raise HarnessError(f"--folds {config.folds} needs at least {config.folds} images of each label")
    if config.protocol == "grouped":
        slides = slide_groups_of(dataset, config, groups)[subset]
        grouped = _group_folds(labels[subset], slides, config.folds, config.seed, f"--folds {config.folds}")
        return [
            Split(train=subset[s.train], val=subset[s.val], protocol="grouped", notes=[f"fold {k} of {config.folds}"])
            for k, s in enumerate(grouped, start=1)
        ]
    folds = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    return [
        Split(
            train=subset[train],
            val=subset[val],
            protocol="stratified",
            notes=[f"fold {k} of {config.folds}: {len(val)} validation images, groups kept whole"],
        )
        for k, (train, val) in enumerate(folds.split(subset, labels[subset], groups[subset]), start=1)
    ]


def make_splits(dataset: Dataset, config: DataConfig) -> list[Split]:
    """One split, or K folds when config.folds > 1; every side of every split holds both labels."""
    splits = kfold_splits(dataset, config) if config.folds > 1 else [make_split(dataset, config)]
    labels = np.asarray(dataset.train.labels)
    for k, split in enumerate(splits, start=1):
        for side, index in (("training", split.train), ("validation", split.val)):
            # One class leaves AUC undefined and accuracy meaningless: such a run must never be trained or ranked.
            counts = np.bincount(labels[index], minlength=2)
            if counts.min() == 0:
                where = f" of fold {k}" if len(splits) > 1 else ""
                raise HarnessError(
                    f"the {side} set{where} holds only label {int(counts.argmax())} ({len(index)} images, protocol"
                    f" {config.protocol}, sample {config.sample or 'all'}): a run needs both labels on both sides;"
                    f" check {dataset.root / 'train_labels.csv'} or use a larger --sample"
                )
    return splits


def make_split(dataset: Dataset, config: DataConfig) -> Split:
    """Sample (config.sample, config.seed), then split by config.protocol; indices refer to dataset.train."""
    labels = np.asarray(dataset.train.labels)
    groups = duplicate_groups(dataset, config.near_duplicates and config.protocol != "seed")
    subset = sample_indices(labels, config.sample, config.seed, groups)
    notes = []
    if len(subset) < len(labels):
        notes.append(f"sampled {len(subset)} of {len(labels)} (stratified, duplicate groups whole, seed {config.seed})")
    if config.protocol == "seed":
        inner = seed_protocol_split(dataset.train.ids[subset], labels[subset], config.seed, config.val_fraction)
    elif config.protocol == "stratified":
        inner = stratified_split(labels[subset], groups[subset], config.val_fraction, config.seed)
    elif config.protocol == "grouped":
        slides = slide_groups_of(dataset, config, groups)[subset]
        inner = grouped_split(labels[subset], slides, config.val_fraction, config.seed)
    else:
        raise HarnessError(f"--protocol must be seed, stratified or grouped, got {config.protocol!r}")
    train, val = subset[inner.train], subset[inner.val]
    leaked = int(np.isin(groups[val], groups[train]).sum())
    if leaked:
        notes.append(
            f"{leaked} validation images have an identical copy in training (the seed protocol ignores duplicates;"
            " --protocol stratified and grouped do not)"
        )
    return Split(train=train, val=val, protocol=inner.protocol, notes=notes + inner.notes)


def _groups(labels: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image its group number; per group its size and its first image's label."""
    if groups is None:
        inv = np.arange(len(labels))
    else:
        inv = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    sizes = np.bincount(inv)
    first = np.full(len(sizes), len(labels), dtype=np.int64)
    np.minimum.at(first, inv, np.arange(len(labels)))
    return inv, sizes, labels[first]


def _take_groups(order: np.ndarray, sizes: np.ndarray, target: int) -> np.ndarray:
    """Groups taken in `order` while they fit in `target` images; the prefix is vectorised, the rest greedy."""
    cum = np.cumsum(sizes[order])
    k = int(np.searchsorted(cum, target, side="right"))
    taken = list(order[:k])
    room = target - (int(cum[k - 1]) if k else 0)
    for g in order[k:]:
        if room <= 0:
            break
        if sizes[g] <= room:
            taken.append(g)
            room -= int(sizes[g])
    return np.asarray(taken, dtype=np.int64)


def _apportion(n: int, counts: np.ndarray) -> np.ndarray:
    """Split n across classes in proportion to counts (largest remainder), at least one each."""
    exact = n * counts / counts.sum()
    quotas = np.maximum(np.floor(exact).astype(np.int64), 1)
    while quotas.sum() < n:
        quotas[int(np.argmax(exact - quotas))] += 1
    while quotas.sum() > n:
        quotas[int(np.argmax(np.where(quotas > 1, quotas, -1)))] -= 1
    return np.minimum(quotas, counts)
