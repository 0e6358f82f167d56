"""HED stain jitter and saturation jitter: colour deconvolution, the drawn scale, inference, saving, config errors."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

import harness
from harness.cli import main
from harness.config import AugmentConfig
from harness.errors import ConfigError
from harness.training.augmentation import RandomHEDJitter, RandomSaturationScale, augmentation_layers
from harness.training.train import with_input_pipeline

pytestmark = pytest.mark.needs_backend

# Ruifrok & Johnston's stain vectors as skimage.color.rgb2hed has them, written out here rather than imported
# so that a changed matrix in the harness fails these tests.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
H, E, DAB = 0, 1, 2


def stained(concentrations: np.ndarray) -> np.ndarray:
    """0..255 RGB pixels that the given (..., 3) H, E, DAB optical densities transmit (Beer-Lambert)."""
    return (255.0 * np.exp(-concentrations @ RGB_FROM_HED)).astype("float32")


def deconvolve(pixels: np.ndarray) -> np.ndarray:
    """The H, E, DAB optical densities of 0..255 RGB pixels, by numpy, independently of the harness."""
    return -np.log(np.maximum(pixels / 255.0, 1e-6)) @ np.linalg.inv(RGB_FROM_HED)


def apply(layer: keras.layers.Layer, images: np.ndarray, training: bool = True) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(images), training=training))


def test_rgb_to_hed_and_back_with_zero_jitter_returns_the_image_within_one_level():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 16, 16, 3)).astype("float32")
    images[0, 0, 0], images[0, 0, 1] = (0, 0, 0), (255, 255, 255)  # the extremes: black and white
    out = apply(RandomHEDJitter(0.0, 0.0, seed=1), images)
    assert out.shape == images.shape and out.dtype == np.float32
    assert np.abs(out - images).max() <= 1.0  # 1/255 of the range


def test_hed_jitter_scales_the_haematoxylin_density_by_the_drawn_factor():
    # Synthetic tissue of known stain: haematoxylin varying per pixel, eosin constant, no DAB.
    rng = np.random.default_rng(1)
    truth = np.zeros((32, 8, 8, 3))
    truth[..., H] = rng.uniform(0.1, 1.0, size=(32, 8, 8))
    truth[..., E] = 0.3
    assert np.allclose(deconvolve(stained(truth)), truth, atol=1e-4)  # the synthetic image is what it claims

    sigma = 0.2
    out = deconvolve(apply(RandomHEDJitter(sigma, 0.0, seed=5), stained(truth)))
    scale, shift = (keras.ops.convert_to_numpy(t) for t in RandomHEDJitter(sigma, 0.0, seed=5).factors(32))
    assert np.allclose(shift, 0.0)
    expected_h = truth[..., H] * scale[..., H]  # (32, 1, 1) per image times every pixel of that image
    assert np.allclose(out[..., H], expected_h, rtol=1e-3, atol=1e-4)
    assert np.allclose(out[..., E], 0.3 * scale[..., E], rtol=1e-3, atol=1e-4)
    assert np.allclose(out[..., DAB], 0.0, atol=1e-4)  # no DAB stays no DAB without a shift
    # One factor per image and stain, spread over 1 +- sigma.
    factors = scale[:, 0, 0, H]
    assert (np.abs(factors - 1) <= sigma + 1e-6).all() and factors.min() < 0.9 and factors.max() > 1.1


def test_hed_jitter_shifts_every_stain_density_by_the_drawn_offset():
    truth = np.full((16, 4, 4, 3), 0.0)
    truth[..., H], truth[..., E], truth[..., DAB] = 0.5, 0.4, 0.2
    out = deconvolve(apply(RandomHEDJitter(0.0, 0.1, seed=9), stained(truth)))
    scale, shift = (keras.ops.convert_to_numpy(t) for t in RandomHEDJitter(0.0, 0.1, seed=9).factors(16))
    assert np.allclose(scale, 1.0)
    assert np.allclose(out, truth + shift, atol=1e-4)
    assert np.abs(shift).max() <= 0.1 and np.ptp(shift[:, 0, 0, H]) > 0.05


def test_saturation_jitter_scales_hsv_saturation_and_keeps_hue_and_value():
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, size=(8, 8, 8, 3)).astype("float32")
    out = apply(RandomSaturationScale(0.5, seed=4), images)
    factor = keras.ops.convert_to_numpy(RandomSaturationScale(0.5, seed=4).factors(8))[:, 0, 0, 0]

    def hsv(batch):
        return cv2.cvtColor((batch / 255).reshape(-1, 8, 3), cv2.COLOR_RGB2HSV).reshape(batch.shape)

    before, after = hsv(images), hsv(out)
    assert np.allclose(after[..., 1], np.minimum(before[..., 1] * factor[:, None, None], 1.0), atol=1e-5)
    assert np.allclose(after[..., 2], before[..., 2], atol=1e-6)
    coloured = before[..., 1] > 0.05
    hue_change = (after[..., 0] - before[..., 0] + 180) % 360 - 180  # degrees, across the 0/360 seam
    assert np.abs(hue_change[coloured]).max() < 0.01
    assert factor.min() < 0.9 and factor.max() > 1.1 and out.min() >= 0 and out.max() <= 255.001


@pytest.mark.parametrize(
    "layer", [RandomHEDJitter(0.2, 0.2, seed=1), RandomSaturationScale(0.5, seed=1)], ids=["hed", "saturation"]
)
def test_stain_layers_are_the_identity_at_inference(layer):
    images = np.random.default_rng(3).uniform(0, 255, size=(4, 12, 12, 3)).astype("float32")
    assert not np.allclose(apply(layer, images, training=True), images, atol=1.0)
    assert np.array_equal(apply(layer, images, training=False), images)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images)), images)  # no flag given: inference


def test_a_saved_model_with_stain_augmentation_loads_and_predicts_the_same(tmp_path):
    core = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Conv2D(2, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=1)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, "sigmoid", kernel_initializer=keras.initializers.GlorotUniform(seed=2)),
        ]
    )
    config = AugmentConfig(hed=0.1, hed_shift=0.05, saturation=0.2)
    model = with_input_pipeline(core, config, seed=3, image_shape=(24, 24, 3))
    assert {"random_hed", "random_saturation"} <= {layer.name for layer in model.layers}
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    images = np.random.default_rng(4).integers(0, 256, size=(6, 24, 24, 3)).astype("float32")
    assert np.allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    hed = loaded.get_layer("random_hed")
    assert isinstance(hed, RandomHEDJitter) and (hed.sigma, hed.bias, hed.seed) == (0.1, 0.05, 8)
    saturation = loaded.get_layer("random_saturation")
    assert isinstance(saturation, RandomSaturationScale) and saturation.factor == 0.2


def test_the_hed_shift_follows_the_scale_strength_unless_given():
    (alone,) = augmentation_layers(AugmentConfig(hed=0.1), seed=0)
    assert isinstance(alone, RandomHEDJitter) and (alone.sigma, alone.bias) == (0.1, 0.1)
    (shift_only,) = augmentation_layers(AugmentConfig(hed_shift=0.05), seed=0)
    assert isinstance(shift_only, RandomHEDJitter) and (shift_only.sigma, shift_only.bias) == (0.0, 0.05)
    assert AugmentConfig(saturation=0.1).active and AugmentConfig(hed=0.1).active and not AugmentConfig().active


@pytest.mark.backend_free
@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"hed": 1.5}, "--hed"),
        ({"hed": -0.1}, "--hed"),
        ({"hed_shift": 2.0}, "--hed-shift"),
        ({"saturation": 1.0}, "--saturation"),
    ],
)
def test_an_invalid_strength_is_a_config_error_naming_the_flag(values, flag):
    with pytest.raises(ConfigError, match=f"^{flag} must be in"):
        AugmentConfig(**values)


@pytest.mark.backend_free
def test_an_invalid_strength_on_the_command_line_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["run", "cnn", "--hed", "3", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --hed must be in [0, 1)")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_stain_flags_train_a_run_that_records_and_saves_its_stain_layers(make_kaggle, tmp_path, capsys):
    from harness.store.runs import RunStore, default_storage

    data = make_kaggle(n_train=20, n_test=4)
    where = ["--data", str(data), "--results", str(tmp_path / "r"), "--no-progress"]
    # --save-optimizer keeps the training graph (the plain model.keras is the inference graph, stain-free).
    argv = ["run", "cnn", "--epochs", "1", "--hed", "0.1", "--saturation", "0.2", "--save-optimizer", *where]
    assert main(argv) == 0, capsys.readouterr()
    (record,) = RunStore(default_storage(tmp_path / "r")).runs()
    assert record.status == "complete", record.error
    augment = record.spec["training"]["augment"]
    assert (augment["hed"], augment["hed_shift"], augment["saturation"]) == (0.1, None, 0.2)
    model = harness.load_model(f"{record.artifacts}/model.keras")
    assert isinstance(model.get_layer("random_hed"), RandomHEDJitter)
    assert isinstance(model.get_layer("random_saturation"), RandomSaturationScale)
