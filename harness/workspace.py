"""Where a command reads and writes: the data folder (or the built-in demo), the results folder and the store."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from harness.data import Dataset, load_dataset
from harness.data.demo import DEMO_NOTICE, ensure_demo_dataset
from harness.errors import HarnessError

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when first used: `harness data check` needs none
    from harness.store.runs import RunStore

ENV_DATA = "HARNESS_DATA"
ENV_RESULTS = "HARNESS_RESULTS"
ENV_STORAGE = "HARNESS_STORAGE"


def check_writable(folder: Path) -> None:
    """Fail early, with the folder's name, rather than after an hour of training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise HarnessError(f"results folder {folder} is not writable: {exc.strerror or exc}") from None


@dataclass
class Workspace:
    """The three common flags, resolved: --data, --results and --storage."""

    data: Path | None = None
    results: Path = Path("results")
    storage: str | None = None
    console: Console = field(default_factory=lambda: Console(stderr=True))
    _store: RunStore | None = None
    _dataset: Dataset | None = None

    @classmethod
    def from_flags(cls, data: str | None, results: str | None, storage: str | None, console: Console) -> Workspace:
        data = data or os.environ.get(ENV_DATA)
        results_dir = Path(results or os.environ.get(ENV_RESULTS) or "results").expanduser()
        return cls(
            data=Path(data).expanduser() if data else None,
            results=results_dir,
            storage=storage or os.environ.get(ENV_STORAGE),
            console=console,
        )

    @property
    def storage_url(self) -> str:
        from harness.store.runs import default_storage

        return self.storage or default_storage(self.results)

    @property
    def submission_path(self) -> Path:
        return self.results / "submission.csv"

    def store(self) -> RunStore:
        if self._store is None:
            check_writable(self.results)
            # Artifact paths are stored relative to this results folder, wherever it is moved or run from.
            from harness.store.runs import RunStore

            self._store = RunStore(self.storage_url, root=self.results)
        return self._store

    def data_dir(self) -> Path:
        if self.data is not None:
            return self.data.resolve()
        check_writable(self.results)
        return ensure_demo_dataset(self.results).resolve()

    def dataset(self, progress: bool = True, page_cache: bool = True) -> Dataset:
        if self._dataset is None:
            check_writable(self.results)
            cache = self.results / "cache"
            self._dataset = load_dataset(self.data_dir(), cache, progress=progress, page_cache=page_cache)
            if self._dataset.synthetic:
                self.console.print(f"[yellow]{DEMO_NOTICE}[/yellow]")
        return self._dataset
