"""The bench's scratch datasets: the source folder (given or synthetic), its subsets by size (hard links, Kaggle's
label mix), the harness's cache of each and the seed's prepared folders of each."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from harness.bench.options import BenchOptions
from harness.data import LABELS_CSV, SUBMISSION_CSV, Dataset, load_dataset, read_labels, scan_folder
from harness.errors import HarnessError


class Fixtures:
    """Every folder the stages time, made once in the scratch folder `work` and shared by the stages."""

    def __init__(self, options: BenchOptions, console: Console, work: Path, notes: list[str]) -> None:
        self.work = work
        self.root = _source_folder(options, console, work, notes)
        ids, labels = read_labels(self.root / LABELS_CSV)
        self.ids = np.asarray(ids)
        self.labels = labels
        self.test_files = sorted(os.path.basename(p) for p in scan_folder(self.root, "test").values())
        self.full = len(self.ids)
        # The size feed, train and predict run on: the seed's quadratic PrepareData must finish on it.
        self.main = min(options.sample or min(self.full, options.seed_limit), self.full)
        self._folders: dict[int, Path] = {self.full: self.root}
        self._seed_prepared: dict[int, Any] = {}

    def n_test(self, size: int) -> int:
        """Test images that go with `size` labelled ones: the source folder's proportion."""
        if size >= self.full:
            return len(self.test_files)
        return max(1, round(size * len(self.test_files) / self.full))

    def folder(self, size: int) -> Path:
        """A Kaggle folder with `size` of the labelled images (hard links), Kaggle's label mix, n1 <= n0."""
        if size in self._folders:
            return self._folders[size]
        n1_all = int(self.labels.sum())
        n1 = min(round(size * n1_all / self.full), size // 2, n1_all)
        n0 = min(size - n1, self.full - n1_all)
        pick = np.zeros(self.full, dtype=bool)
        pick[np.flatnonzero(self.labels == 0)[:n0]] = True
        pick[np.flatnonzero(self.labels == 1)[:n1]] = True
        folder = self.work / f"subset-{size}"
        (folder / "train").mkdir(parents=True)
        (folder / "test").mkdir()
        train_names = {p.stem: p.name for p in (self.root / "train").iterdir()}
        for id_ in self.ids[pick]:
            _link(self.root / "train" / train_names[id_], folder / "train" / train_names[id_])
        test = self.test_files[: self.n_test(size)]
        for name in test:
            _link(self.root / "test" / name, folder / "test" / name)
        pd.DataFrame({"id": self.ids[pick], "label": self.labels[pick]}).to_csv(folder / LABELS_CSV, index=False)
        pd.DataFrame({"id": [os.path.splitext(n)[0] for n in test], "label": 0}).to_csv(
            folder / SUBMISSION_CSV, index=False
        )
        self._folders[size] = folder
        return folder

    def cache(self, size: int) -> Path:
        """Where the harness's cache of a size's folder lives."""
        return self.work / f"cache-{size}"

    def dataset(self, size: int) -> Dataset:
        """The harness's cache of a size's folder (built once, untimed, when the prepare stage did not build it)."""
        return load_dataset(self.folder(size), self.cache(size), progress=False)

    def seed_prepared(self, size: int, fresh: bool = False) -> Any:
        """The seed's PrepareData output for a size's folder (`fresh`: run it again, as the prepare stage times)."""
        if fresh or size not in self._seed_prepared:
            from harness.bench.seed_way import prepare

            target = self.work / f"seed-{size}"
            shutil.rmtree(target, ignore_errors=True)
            self._seed_prepared[size] = prepare(self.folder(size), target)
        return self._seed_prepared[size]

    def warm(self, size: int) -> None:
        """Read every image of a size's folder once, so that the first way timed does not pay the disk for both."""
        folder = self.folder(size)
        paths = [p for part in ("train", "test") for p in (folder / part).iterdir()]

        def read(chunk: list[Path]) -> None:
            for path in chunk:
                with open(path, "rb") as handle:
                    handle.read()

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(read, [paths[i : i + 1024] for i in range(0, len(paths), 1024)]))


def _source_folder(options: BenchOptions, console: Console, work: Path, notes: list[str]) -> Path:
    """The folder given by --data, or a synthetic Kaggle folder of --synthetic (default 2,000) images."""
    if options.data is not None:
        root = Path(options.data).expanduser()
        if not (root / LABELS_CSV).is_file():
            raise HarnessError(f"{root} is not a Kaggle folder: {LABELS_CSV}, train/ and test/ are expected")
        return root
    from harness.data.synth import KAGGLE_TEST, KAGGLE_TRAIN, write_kaggle_folder

    n = options.synthetic or 2000
    n_test = max(1, round(n * KAGGLE_TEST / KAGGLE_TRAIN))
    console.print(f"generating a synthetic Kaggle folder: {n:,} train and {n_test:,} test .tif images")
    start = time.perf_counter()
    root = write_kaggle_folder(work / "synthetic", n, n_test)
    seconds = time.perf_counter() - start
    notes.append(f"synthetic folder: {n:,} + {n_test:,} uncompressed .tif written in {seconds:.1f} s")
    return root


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copy2(source, target)
