"""Shared test helpers: tiny Kaggle-layout folders written on demand."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.data.demo import make_id, render_patch

# Python children of the tests (workers, killed runs, plain-Keras loaders) must import the installed harness, the
# package tox builds and tests: they may not put their working folder (the checkout, whose `harness/` would shadow
# it) first on sys.path.
os.environ["PYTHONSAFEPATH"] = "1"

# postgres_server (session) and postgres_url (a fresh database per test): a real server, see postgres_fixture.py.
pytest_plugins = ["postgres_fixture"]

REPO = Path(__file__).resolve().parents[1]  # the checkout: examples/, docs/, pyproject.toml
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # stored reference files (a first-release store, ...)
POSTGRES_FIXTURES = ("postgres_server", "postgres_url", "own_server")


_INTERRUPTED: list[bool] = []


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C stops the session even when the test running swallowed it: a test that calls the CLI in-process gets
    the CLI's own handling (one line, exit code 130) and would otherwise go on to the next test."""

    def interrupted(signum: int, frame: object) -> None:
        _INTERRUPTED.append(True)
        signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as without this handler

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupted)


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    if _INTERRUPTED:
        pytest.exit(f"interrupted (Ctrl-C) during {nodeid}", returncode=2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts or uses a PostgreSQL server `postgres`, whether it asks for the server as a
    fixture or is the PostgreSQL case of a parametrized test (`backend="postgresql"`), so `-m "not postgres"`
    selects by what a test needs, not by its file."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        uses_fixture = any(name in getattr(item, "fixturenames", ()) for name in POSTGRES_FIXTURES)
        if uses_fixture or any(isinstance(v, str) and v == "postgresql" for v in params.values()):
            item.add_marker(pytest.mark.postgres)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or any cv2-writable) array; cv2 wants BGR for 3-channel images."""
    arr = rgb[..., ::-1] if rgb.ndim == 3 and rgb.shape[-1] == 3 else rgb
    assert cv2.imwrite(str(path), np.ascontiguousarray(arr)), path
    return path


def make_kaggle_folder(
    root: Path,
    n_train: int = 20,
    n_test: int = 6,
    ext: str = ".tif",
    seed: int = 0,
    sample_submission: bool = True,
) -> Path:
    """A tiny Kaggle folder: train/, test/, train_labels.csv (balanced) and optionally sample_submission.csv."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    labels = np.arange(n_train) % 2
    train_ids = [make_id(seed, "test-train", i) for i in range(n_train)]
    for id_, label in zip(train_ids, labels, strict=True):
        write_image(root / "train" / f"{id_}{ext}", render_patch(rng, int(label)))
    (root / "train_labels.csv").write_text(
        "id,label\n" + "".join(f"{i},{v}\n" for i, v in zip(train_ids, labels, strict=True))
    )
    test_ids = [make_id(seed, "test-test", i) for i in range(n_test)]
    for i, id_ in enumerate(test_ids):
        write_image(root / "test" / f"{id_}{ext}", render_patch(rng, i % 2))
    if sample_submission:
        (root / "sample_submission.csv").write_text("id,label\n" + "".join(f"{i},0\n" for i in test_ids))
    return root


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` (e.g. '64k') mounted at `folder` for a full-disk test; skips where mounting is not
    allowed (it needs root), where the simulated full-disk tests still run."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated full-disk test covers this")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def train_ids_of(root: Path) -> list[str]:
    """The ids of train_labels.csv, in order."""
    return [line.split(",")[0] for line in (Path(root) / "train_labels.csv").read_text().splitlines()[1:]]


@pytest.fixture
def make_kaggle(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_kaggle(name="data", **kwargs) writes a folder under tmp_path via make_kaggle_folder."""

    def make(name: str = "data", **kwargs) -> Path:
        return make_kaggle_folder(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def kaggle_folder(make_kaggle: Callable[..., Path]) -> Path:
    """A tiny .tif Kaggle folder (20 train, 6 test)."""
    return make_kaggle()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def runner(make_kaggle: Callable[..., Path], tmp_path: Path):
    """A Runner on a tiny Kaggle folder (40 train, 8 test) with its own SQLite store, quiet."""
    from rich.console import Console

    from harness.data import load_dataset
    from harness.store.runs import RunStore
    from harness.training.runner import Runner

    dataset = load_dataset(make_kaggle(n_train=40, n_test=8), tmp_path / "cache", progress=False)
    store = RunStore(f"sqlite:///{tmp_path / 'harness.db'}")
    return Runner(dataset, store, tmp_path / "results", progress=False, console=Console(quiet=True))
