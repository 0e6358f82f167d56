"""The built-in demo: a synthetic dataset in Kaggle's layout (label decided by the centre 32x32) and its budget."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from harness.config import RunSpec
from harness.data import IMAGE_SHAPE, LABELS_CSV, SUBMISSION_CSV, SYNTHETIC_MARKER
from harness.errors import HarnessError

DEMO_NOTICE = (
    "synthetic demo data, not real tissue: pink background with purple nuclei, where label 1 means atypical nuclei "
    "(larger, darker, irregular, crowded) in the centre 32x32 region and the classes overlap on purpose; scores on "
    "it say nothing about cancer detection"
)
DEMO_DIRNAME = "demo-data"
# Written into the marker: a demo folder of another version (the old, trivially easy one) is generated again.
DEMO_VERSION = 2
DEMO_TRAIN, DEMO_TEST = 512, 128
# Without --data, `harness run` trains each model for one epoch: the README's first command, installs included,
# then ends within 3 minutes on 2 CPU cores. --full-budget, --epochs or --data give the notebook's budget back.
DEMO_EPOCHS = 1
TEST_LABELS_CSV = "test_labels.csv"

_SIZE = IMAGE_SHAPE[0]
_CENTRE = (32, 64)  # the 32x32 region that decides the label, as in PCam
_BACKGROUND = np.array([236.0, 178.0, 208.0], dtype=np.float32)  # eosin pink, RGB
_NUCLEUS = np.array([72.0, 38.0, 128.0], dtype=np.float32)  # haematoxylin purple, RGB


def make_id(seed: int, split: str, index: int) -> str:
    """A deterministic 40-hex id, shaped like Kaggle's."""
    return hashlib.sha1(f"harness-demo/{seed}/{split}/{index}".encode()).hexdigest()


def render_patch(rng: np.random.Generator, label: int) -> np.ndarray:
    """One 96x96x3 uint8 RGB patch; only the centre 32x32 depends on `label`."""
    # Slowly varying stain intensity: a coarse random grid, upsampled.
    coarse = rng.normal(0.0, 1.0, (6, 6, 3)).astype(np.float32) * np.array([3.0, 3.0, 3.0], dtype=np.float32)
    coarse += rng.normal(0.0, 10.0, (6, 6, 1)).astype(np.float32)  # mostly lightness, a little hue
    tint = cv2.resize(coarse, (_SIZE, _SIZE), interpolation=cv2.INTER_CUBIC)
    density: np.ndarray = np.zeros((_SIZE, _SIZE), dtype=np.float32)

    # Nuclei outside the centre follow the same law for both labels, so only the centre carries the label.
    lo, hi = _CENTRE[0] - 5, _CENTRE[1] + 5
    for _ in range(int(rng.poisson(16))):
        while True:
            x, y = rng.integers(0, _SIZE, 2)
            if not (lo <= x < hi and lo <= y < hi):
                break
        _nucleus(density, rng, int(x), int(y), radius=(2, 5), strength=(0.45, 0.95))

    if label:
        # Tumour-like: a dense cluster of large, dark nuclei in the centre.
        for _ in range(int(rng.integers(11, 19))):
            x, y = rng.integers(_CENTRE[0] + 2, _CENTRE[1] - 2, 2)
            _nucleus(density, rng, int(x), int(y), radius=(3, 6), strength=(0.8, 1.0))
    else:
        # Normal: at most a few small, pale nuclei in the centre.
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.integers(_CENTRE[0] + 2, _CENTRE[1] - 2, 2)
            _nucleus(density, rng, int(x), int(y), radius=(2, 3), strength=(0.3, 0.55))

    density = cv2.GaussianBlur(density, (3, 3), 0.8)[..., None]
    rgb = (_BACKGROUND + tint) * (1.0 - density) + _NUCLEUS * density
    rgb += rng.normal(0.0, 5.0, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def render_demo_patch(rng: np.random.Generator, label: int) -> np.ndarray:
    """One 96x96x3 uint8 RGB patch of the demo set, hard enough that models differ and none scores perfectly.

    Normal nuclei lie everywhere, the centre included. Label 1 puts a region of atypical nuclei in the centre 32x32,
    its atypia `t` drawn from [0.25, 1]: larger, darker, more irregular and more crowded as `t` grows. Some label-0
    centres hold a mildly atypical region too (`t` up to 0.5), so the classes overlap; an atypical region outside the
    centre, for either label, decides nothing (as in PCam); and each patch's stain differs in lightness and hue.
    """
    coarse = rng.normal(0.0, 1.0, (6, 6, 3)).astype(np.float32) * np.float32(4.0)
    coarse += rng.normal(0.0, 10.0, (6, 6, 1)).astype(np.float32)
    tint: np.ndarray = cv2.resize(coarse, (_SIZE, _SIZE), interpolation=cv2.INTER_CUBIC)
    tint += rng.normal(0.0, 14.0) + rng.normal(0.0, 6.0, 3).astype(np.float32)  # the slide's own stain
    density: np.ndarray = np.zeros((_SIZE, _SIZE), dtype=np.float32)
    for _ in range(int(rng.poisson(rng.uniform(15, 40)))):
        x, y = rng.integers(0, _SIZE, 2)
        _cell(density, rng, int(x), int(y), 0.0)
    if rng.random() < 0.5:  # an atypical region outside the centre
        while True:
            x, y = rng.integers(10, _SIZE - 10, 2)
            if not (_CENTRE[0] - 8 <= x < _CENTRE[1] + 8 and _CENTRE[0] - 8 <= y < _CENTRE[1] + 8):
                break
        _region(density, rng, int(x), int(y), rng.uniform(0.25, 1.0))
    atypia = rng.uniform(0.25, 1.0) if label else (rng.uniform(0.0, 0.5) if rng.random() < 0.4 else 0.0)
    if atypia > 0:
        x, y = rng.integers(_CENTRE[0] + 6, _CENTRE[1] - 6, 2)
        _region(density, rng, int(x), int(y), atypia)
    density = cv2.GaussianBlur(np.minimum(density, 1.0), (3, 3), 0.8)[..., None]
    rgb = (_BACKGROUND + tint) * (1.0 - density) + _NUCLEUS * density
    rgb += rng.normal(0.0, 8.0, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _cell(density: np.ndarray, rng: np.random.Generator, x: int, y: int, atypia: float) -> None:
    """One nucleus: `atypia` 0 is small, round and pale; 1 is large, elongated and dark."""
    a = rng.uniform(2.0 + 1.5 * atypia, 3.5 + 2.5 * atypia)
    b = a * rng.uniform(1.0 - 0.45 * atypia, 1.0)
    value = rng.uniform(0.45 + 0.25 * atypia, 0.75 + 0.2 * atypia)
    cv2.ellipse(density, (x, y), (round(a), round(b)), float(rng.uniform(0, 180)), 0, 360, value, thickness=-1)


def _region(density: np.ndarray, rng: np.random.Generator, x: int, y: int, atypia: float) -> None:
    """A crowd of nuclei around (x, y), the more and the more atypical the higher `atypia`."""
    for _ in range(int(rng.poisson(6 * (0.5 + atypia)))):
        dx, dy = rng.normal(0.0, 6.0, 2)
        _cell(density, rng, int(x + dx), int(y + dy), atypia)


def _nucleus(density: np.ndarray, rng: np.random.Generator, x: int, y: int, radius: tuple, strength: tuple) -> None:
    axes = (int(rng.integers(*radius)), int(rng.integers(*radius)))
    value = float(rng.uniform(*strength))
    cv2.ellipse(density, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, value, thickness=-1)


def write_demo_dataset(path: str | Path, n_train: int = DEMO_TRAIN, n_test: int = DEMO_TEST, seed: int = 0) -> Path:
    """Write a deterministic synthetic Kaggle folder at `path` (built in a temporary folder, then renamed)."""
    path = Path(path)
    if n_train < 4 or n_test < 1:
        raise HarnessError(f"demo dataset needs at least 4 train and 1 test images, got {n_train} and {n_test}")
    if path.exists() and any(path.iterdir()):
        raise HarnessError(f"{path} already exists and is not empty; refusing to write the demo dataset there")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write(tmp, n_train, n_test, seed)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensure_demo_dataset(results_dir: str | Path) -> Path:
    """Return `<results_dir>/demo-data`, generating it first when it is absent, incomplete or of an older version."""
    path = Path(results_dir) / DEMO_DIRNAME
    if _is_complete(path):
        return path
    if path.exists():
        # Incomplete (e.g. files deleted by hand) or older: move it aside, then delete, so the rename can succeed.
        aside = Path(tempfile.mkdtemp(prefix=f".{DEMO_DIRNAME}.old-", dir=path.parent))
        os.replace(path, aside / "old")
        shutil.rmtree(aside, ignore_errors=True)
    try:
        return write_demo_dataset(path, DEMO_TRAIN, DEMO_TEST)
    except (HarnessError, OSError):
        # Another process may have finished the same demo folder first.
        if _is_complete(path):
            return path
        raise


def _write(root: Path, n_train: int, n_test: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, n, csv_name in (("train", n_train, LABELS_CSV), ("test", n_test, TEST_LABELS_CSV)):
        folder = root / split
        folder.mkdir()
        labels = rng.permutation(np.arange(n) % 2)  # balanced
        ids = [make_id(seed, split, i) for i in range(n)]
        for id_, label in zip(ids, labels, strict=True):
            rgb = render_demo_patch(rng, int(label))
            if not cv2.imwrite(str(folder / f"{id_}.tif"), np.ascontiguousarray(rgb[..., ::-1])):
                raise HarnessError(f"{folder / id_}.tif: could not write the demo image")
        (root / csv_name).write_text(
            "id,label\n" + "".join(f"{i},{int(v)}\n" for i, v in zip(ids, labels, strict=True))
        )
        if split == "test":
            (root / SUBMISSION_CSV).write_text("id,label\n" + "".join(f"{i},0\n" for i in ids))
    # Written last: its presence marks a finished folder.
    (root / SYNTHETIC_MARKER).write_text(
        f"This folder holds synthetic demo data generated by harness.data.demo, not real tissue.\n{DEMO_NOTICE}\n"
        f"n_train={n_train} n_test={n_test} seed={seed}\nversion={DEMO_VERSION}\n"
    )


def _is_complete(path: Path) -> bool:
    try:
        marker = path / SYNTHETIC_MARKER
        if not marker.is_file() or f"version={DEMO_VERSION}" not in marker.read_text().split():
            return False
        for split, csv_name in (("train", LABELS_CSV), ("test", SUBMISSION_CSV)):
            ids = [line.split(",")[0] for line in (path / csv_name).read_text().splitlines()[1:] if line]
            present = {p.stem for p in (path / split).glob("*.tif")}
            if not ids or set(ids) != present:
                return False
        return True
    except OSError:
        return False


def demo_budget(specs: Sequence[RunSpec]) -> tuple[list[RunSpec], str]:
    """The demo's budget: DEMO_EPOCHS for each registered model (at most its own), and a line that says so.

    Stored runs trained again (`harness run RUN_ID`) keep their epochs. The line names the full budget's flag.
    """
    cut: list[RunSpec] = []
    changed: list[tuple[str, int, int]] = []
    for spec in specs:
        if spec.origin.kind.startswith("rerun:"):
            cut.append(spec)
            continue
        epochs = min(DEMO_EPOCHS, spec.training.epochs)
        changed.append((spec.architecture, epochs, spec.training.epochs))
        cut.append(dataclasses.replace(spec, training=dataclasses.replace(spec.training, epochs=epochs)))
    if not changed:
        return cut, ""
    own = ", ".join(f"{name} {epochs}" for name, epochs, _ in changed)
    full = ", ".join(str(full) for _, _, full in changed)
    return cut, (
        f"demo budget: {DEMO_EPOCHS} epoch per model ({own}) on the synthetic demo data; "
        f"the notebook's full budget ({full} epochs): add --full-budget"
    )
