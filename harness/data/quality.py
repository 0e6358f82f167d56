"""The data check's report: label counts, near-blank images, exact duplicates; found while decoding, never dropped."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.data.labels import examples

# An image is "near-blank" (near-uniform) when the pixel standard deviation of each of its channels is below this.
BLANK_STD = 2.0
# Near-duplicates (a pHash per image) matter only to the splits that keep them together, which compute and cache
# them on first use; the check, which needs only exact pixel digests, says so rather than spend the time.
NEAR_DUPLICATES_NOTE = (
    "near-duplicates (pHash within 4 bits): not computed by the check; a run with --protocol stratified or grouped"
    " (or --folds K) computes them once, caches them and keeps each group on one side"
)


@dataclass(frozen=True)
class QualityReport:
    """What a data check found. Blank and duplicate images are reported here, never dropped."""

    n_train: int
    n_test: int
    label_counts: dict[int, int]
    blank_train_ids: list[str]
    blank_test_ids: list[str]
    duplicate_groups: list[list[str]]
    cross_duplicates: list[tuple[str, str]]
    conflicting_duplicate_groups: list[list[str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        counts = ", ".join(f"label {k}: {v}" for k, v in sorted(self.label_counts.items()))
        n_dup = sum(len(g) for g in self.duplicate_groups)
        out = [
            f"train: {self.n_train} labelled images ({counts})",
            f"test: {self.n_test} images",
            f"near-blank images (every channel's pixel std < {BLANK_STD:g}): {len(self.blank_train_ids)} train"
            f"{examples(self.blank_train_ids)}, {len(self.blank_test_ids)} test{examples(self.blank_test_ids)}",
            f"exact duplicates in train: {len(self.duplicate_groups)} groups holding {n_dup} images "
            f"({n_dup - len(self.duplicate_groups)} redundant copies); the stratified split keeps groups on one side",
        ]
        if self.conflicting_duplicate_groups:
            out.append(
                f"duplicate groups with conflicting labels: {len(self.conflicting_duplicate_groups)}"
                f"{examples([g[0] for g in self.conflicting_duplicate_groups])}"
            )
        out.append(f"train/test exact duplicates: {len(self.cross_duplicates)} pairs")
        out.append(NEAR_DUPLICATES_NOTE)
        out.append("nothing is dropped: blank and duplicate images stay in the data")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "label_counts": {str(k): v for k, v in self.label_counts.items()},
            "blank_train_ids": self.blank_train_ids,
            "blank_test_ids": self.blank_test_ids,
            "duplicate_groups": self.duplicate_groups,
            "cross_duplicates": [list(p) for p in self.cross_duplicates],
            "conflicting_duplicate_groups": self.conflicting_duplicate_groups,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> QualityReport:
        return cls(
            n_train=raw["n_train"],
            n_test=raw["n_test"],
            label_counts={int(k): v for k, v in raw["label_counts"].items()},
            blank_train_ids=list(raw["blank_train_ids"]),
            blank_test_ids=list(raw["blank_test_ids"]),
            duplicate_groups=[list(g) for g in raw["duplicate_groups"]],
            cross_duplicates=[(a, b) for a, b in raw["cross_duplicates"]],
            conflicting_duplicate_groups=[list(g) for g in raw["conflicting_duplicate_groups"]],
        )


def quality_report(
    train_ids: list[str],
    train_labels: np.ndarray,
    train_digests: np.ndarray,
    train_std: np.ndarray,
    test_ids: list[str],
    test_digests: np.ndarray,
    test_std: np.ndarray,
) -> QualityReport:
    """The report from what decoding measured: each image's pixel digest and largest channel std."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, d in enumerate(train_digests.tolist()):
        groups[d].append(i)
    duplicate_groups = [idx for idx in groups.values() if len(idx) > 1]
    cross = [(train_ids[i], test_ids[j]) for j, d in enumerate(test_digests.tolist()) if d in groups for i in groups[d]]
    return QualityReport(
        n_train=len(train_ids),
        n_test=len(test_ids),
        label_counts={0: int((train_labels == 0).sum()), 1: int((train_labels == 1).sum())},
        blank_train_ids=_ids_where(train_ids, train_std < BLANK_STD),
        blank_test_ids=_ids_where(test_ids, test_std < BLANK_STD),
        duplicate_groups=[[train_ids[i] for i in g] for g in duplicate_groups],
        cross_duplicates=cross,
        conflicting_duplicate_groups=[
            [train_ids[i] for i in g] for g in duplicate_groups if len({int(train_labels[i]) for i in g}) > 1
        ],
    )


def _ids_where(ids: list[str], mask: np.ndarray) -> list[str]:
    return [ids[i] for i in np.flatnonzero(mask)]
