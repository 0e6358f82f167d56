"""Stain normalisation at inference: two stainings of one tissue come out alike; `harness predict --stain-normalise`."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import write_image

import harness
from harness.data import load_dataset
from harness.errors import HarnessError
from harness.training.augmentation import HED_FROM_RGB, RGB_FROM_HED
from harness.training.stain_norm import StainReference, normalise, normalise_all


def stained(h: np.ndarray, e: np.ndarray) -> np.ndarray:
    """uint8 RGB images from haematoxylin and eosin density maps (N x 96 x 96), as the normaliser's model has it."""
    stains = np.stack([h, e, np.zeros_like(h)], axis=-1).astype(np.float32)
    od = stains @ RGB_FROM_HED.astype(np.float32)
    return np.clip(np.rint(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)


@pytest.fixture
def tissue():
    """Nuclei-like haematoxylin blobs on an eosin background: four patches of one 'slide'."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    h = np.zeros((4, 96, 96), np.float32)
    for k in range(4):
        for cy, cx in rng.uniform(8, 88, (25, 2)):
            h[k] += 1.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
    e = 0.35 + 0.1 * rng.random((4, 96, 96)).astype(np.float32)
    return h + 0.1, e


@pytest.mark.backend_free
def test_two_stainings_of_one_tissue_come_out_alike(tissue):
    h, e = tissue
    one, other = stained(h, e), stained(1.7 * h, 0.6 * e)  # the same patches from a lab with stronger haematoxylin
    reference = StainReference.of(one)
    before = np.abs(one.astype(int) - other.astype(int)).mean()
    after = np.abs(normalise(one, reference).astype(int) - normalise(other, reference).astype(int)).mean()
    assert before > 10 and after < 1, (before, after)


@pytest.mark.backend_free
def test_an_image_at_the_reference_is_kept_and_glass_is_left_alone(tissue):
    images = stained(*tissue)[:1]
    own = StainReference.of(images)
    assert np.abs(normalise(images, own).astype(int) - images.astype(int)).max() <= 1
    glass = np.full((2, 96, 96, 3), 236, np.uint8)
    assert np.array_equal(normalise(glass, own), glass)
    with pytest.raises(ValueError, match="no image has enough stained tissue"):
        StainReference.of(glass)


@pytest.mark.backend_free
def test_the_reference_is_the_median_of_the_images_statistics(tissue):
    h, e = tissue
    reference = StainReference.of(stained(h, e))
    stains = (-np.log((stained(h, e).reshape(4, -1, 3).astype(np.float32) + 1) / 256)) @ HED_FROM_RGB
    means = np.median([s[:, :2].mean(axis=0) for s in stains], axis=0)  # every pixel here is tissue
    assert np.allclose(reference.mean, means, atol=0.02)


def test_harness_predict_stain_normalise_feeds_the_model_normalised_test_images(make_kaggle, tmp_path):
    root = make_kaggle(n_train=12, n_test=10)
    keras.utils.set_random_seed(1)
    layers = [keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D()]
    model = keras.Sequential([keras.Input((96, 96, 3)), *layers, keras.layers.Dense(1, activation="sigmoid")])
    model.save(tmp_path / "model.keras")
    where = {"data": root, "results": tmp_path / "results"}
    plain = pd.read_csv(harness.predict(tmp_path / "model.keras", out=tmp_path / "plain.csv", **where))
    normed = pd.read_csv(
        harness.predict(tmp_path / "model.keras", stain_normalise=True, out=tmp_path / "normed.csv", **where)
    )
    dataset = load_dataset(root, tmp_path / "results" / "cache", progress=False)
    images = normalise_all(dataset.test.images, StainReference.of(dataset.train.images), chunk=4)
    expected = model.predict(images, verbose=0).ravel()
    position = {id_: i for i, id_ in enumerate(dataset.test.ids.tolist())}
    assert list(normed["id"]) == list(plain["id"])
    assert np.allclose(normed["label"], expected[[position[i] for i in normed["id"]]], atol=2e-6)
    assert not np.allclose(normed["label"], plain["label"], atol=1e-4)


@pytest.mark.backend_free
def test_a_training_set_of_bare_glass_is_one_error_naming_the_folder(make_kaggle, tmp_path):
    root = make_kaggle(n_train=4, n_test=2)
    for path in (root / "train").iterdir():
        write_image(path, np.full((96, 96, 3), 240, np.uint8))
    keras.Sequential([keras.Input((96, 96, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)]).save(
        tmp_path / "m.keras"
    )
    with pytest.raises(HarnessError, match=r"--stain-normalise: .*train: no image has enough stained tissue"):
        harness.predict(tmp_path / "m.keras", stain_normalise=True, data=root, results=tmp_path / "r")
