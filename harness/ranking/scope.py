"""Which stored runs a command looks at: by default those on the latest dataset (one data folder's runs compare)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.store.runs import RunRecord


@dataclass(frozen=True)
class Scope:
    """The runs kept, the dataset they share (None: every dataset) and how many on other datasets were left out."""

    runs: list[RunRecord] = field(default_factory=list)
    dataset: str | None = None
    hidden: int = 0

    def text(self) -> str:
        if self.dataset is None:
            return ""
        return f"runs on {self.dataset}" + (
            f" ({self.hidden} on other datasets hidden: --all-data)" if self.hidden else ""
        )


def on_dataset(records: list[RunRecord], dataset: str | None = None, every: bool = False) -> Scope:
    """The runs on `dataset` (default: the latest run's); every=True keeps all, on whatever dataset."""
    if (every and dataset is None) or not records:
        return Scope(list(records))
    dataset = dataset or records[-1].dataset
    kept = [r for r in records if r.dataset == dataset]
    return Scope(kept, dataset, len(records) - len(kept))
