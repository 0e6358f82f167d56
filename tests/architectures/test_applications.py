"""Keras Applications backbones: build at 96x96, cost what their cost function says, load weights from a file, say
where ImageNet weights go when they are missing, and freeze then fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from harness.architectures import applications as apps
from harness.config import AugmentConfig, DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.cost import architecture_cost, model_macs
from harness.errors import HarnessError
from harness.registry import build_model
from harness.training.train import backbones

pytestmark = pytest.mark.needs_backend

SMALL = "mobilenet_v3_small_minimalistic"  # the smallest backbone: the fast tests use it
LARGE = [name for name in apps.BACKBONES if not name.startswith("mobilenet")]


def backbone_weights(model: keras.Model) -> list[np.ndarray]:
    return [w.numpy() for w in backbones(model)[0].weights]


@pytest.mark.parametrize(
    "backbone", ["mobilenet_v3_small", SMALL, *(pytest.param(n, marks=pytest.mark.slow) for n in LARGE)]
)
def test_each_backbone_builds_at_96px_and_costs_what_its_cost_function_says(backbone):
    model = build_model("applications", backbone=backbone)
    assert model.output.shape == (None, 1) and backbones(model)[0].name == "backbone"
    cost = architecture_cost("applications", backbone=backbone)
    assert cost.parameters == model.count_params()
    assert cost.gmacs == pytest.approx(model_macs(model) / 1e9, rel=1e-9)
    keras.backend.clear_session()


def test_weights_path_loads_the_file_the_backbone_was_saved_to(tmp_path: Path):
    keras.utils.set_random_seed(1)
    source = apps.build_backbone(SMALL, (96, 96, 3))
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    keras.utils.set_random_seed(2)  # a different random start: only the file can make the weights equal
    loaded = build_model("applications", backbone=SMALL, weights=str(path))
    fresh = build_model("applications", backbone=SMALL, weights="none")
    saved = [w.numpy() for w in source.weights]
    assert all(np.array_equal(a, b) for a, b in zip(backbone_weights(loaded), saved, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(backbone_weights(fresh), saved, strict=True))


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch) -> Path:
    """Keras's home folder (where it caches downloads, $KERAS_HOME or ~/.keras) moved to a temporary one."""
    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras-home"))
    return tmp_path / "keras-home"


def test_imagenet_weights_missing_is_one_line_saying_where_to_put_them_and_a_placed_file_loads(keras_home: Path):
    expected = keras_home / "models" / "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"
    with pytest.raises(HarnessError) as caught:
        build_model("applications", backbone=SMALL, weights="imagenet")
    message = str(caught.value)
    assert str(expected) in message and "copy it to" in message and "\n" not in message
    # The file Keras would have downloaded, in its legacy HDF5 layout, placed by hand: it loads.
    keras.utils.set_random_seed(3)
    source = apps.build_backbone(SMALL, (96, 96, 3))
    expected.parent.mkdir(parents=True)
    with h5py.File(expected, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)
    keras.utils.set_random_seed(4)
    model = build_model("applications", backbone=SMALL, weights="imagenet")
    saved = [w.numpy() for w in source.weights]
    assert all(np.array_equal(a, b) for a, b in zip(backbone_weights(model), saved, strict=True))


@pytest.mark.backend_free  # builds each backbone (2 to 4 s on TensorFlow), trains nothing
@pytest.mark.parametrize("backbone", list(apps.BACKBONES))
def test_the_imagenet_file_named_is_the_one_keras_fetches(backbone, monkeypatch):
    fetched = {}

    class Fetched(Exception):
        pass

    def get_file(fname=None, origin=None, cache_subdir="datasets", **kwargs):
        fetched.update(fname=fname, origin=origin, cache_subdir=cache_subdir)
        raise Fetched

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", get_file)
    entry = apps.BACKBONES[backbone]
    with pytest.raises(Fetched):
        getattr(keras.applications, entry.constructor)(
            include_top=False, weights="imagenet", input_shape=(96, 96, 3), **dict(entry.extra)
        )
    assert fetched["fname"] == apps.imagenet_file(backbone).name and fetched["cache_subdir"] == "models"
    assert fetched["origin"] == apps.KERAS_WEIGHTS_URL + f"{entry.weights_folder}/{fetched['fname']}"


@pytest.mark.backend_free
def test_bad_weights_and_backbones_are_one_line_errors(tmp_path: Path):
    with pytest.raises(HarnessError, match=r"weights=.*nothing\.h5: no such file"):
        build_model("applications", backbone=SMALL, weights=str(tmp_path / "nothing.h5"))
    with pytest.raises(HarnessError, match="unknown backbone 'vgg16'; choose one of resnet50v2"):
        build_model("applications", backbone="vgg16")


class PhaseRecorder(keras.callbacks.Callback):
    """The backbone's and the head's weights and the learning rate, at the start and after every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone: list[list[np.ndarray]] = []
        self.head: list[np.ndarray] = []
        self.rates: list[float] = []

    def snapshot(self) -> None:
        self.backbone.append(backbone_weights(self.model))
        head = next(layer for layer in self.model._flatten_layers() if layer.name == "probability")
        self.head.append(head.kernel.numpy())
        self.rates.append(float(self.model.optimizer.learning_rate))

    def on_train_begin(self, logs=None):
        if not self.backbone:
            self.snapshot()

    def on_epoch_end(self, epoch, logs=None):
        self.snapshot()


def fine_tune_spec(architecture: str = "applications", **arch_kwargs) -> RunSpec:
    training = TrainingConfig(
        epochs=2,
        batch_size=8,
        optimizer=OptimizerConfig("adam", 1e-3),
        augment=AugmentConfig(crop="centre", crop_size=32),  # 32x32: the backbone's smallest input, fast
        freeze_epochs=1,
        finetune_lr=0.1,
    )
    return RunSpec(architecture, arch_kwargs, training, DataConfig(protocol="stratified", seed=1), seed=1)


@pytest.fixture
def tiny_pretrained(monkeypatch) -> str:
    """A registered architecture as small as can be with a sub-model named 'backbone' (BatchNorm included), the
    part --freeze-epochs freezes: the fine-tuning mechanics without tracing a real backbone (a minute on TensorFlow).
    """
    from harness.registry import ARCHITECTURES

    def tiny_pretrained(input_shape=(96, 96, 3)):
        inputs = keras.Input(input_shape)
        body = keras.Sequential(
            [keras.Input(input_shape), keras.layers.Conv2D(4, 3, strides=4), keras.layers.BatchNormalization()],
            name="backbone",
        )
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(body(inputs)))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="probability")(x))

    ARCHITECTURES.discover()
    monkeypatch.setattr(ARCHITECTURES, "_entries", dict(ARCHITECTURES._entries))
    ARCHITECTURES.register("tiny_pretrained")(tiny_pretrained)
    return "tiny_pretrained"


@pytest.mark.parametrize("which", ["tiny", pytest.param("mobilenet", marks=pytest.mark.slow)])
def test_freeze_then_fine_tune_trains_the_head_first_then_everything_at_the_lower_rate(runner, tiny_pretrained, which):
    spec = fine_tune_spec(tiny_pretrained) if which == "tiny" else fine_tune_spec(backbone=SMALL)
    recorder = PhaseRecorder()
    record = runner.run(spec, callbacks=[recorder])
    assert record.status == "complete", record.error
    assert record.epochs_run == 2
    start, frozen, tuned = recorder.backbone
    assert all(np.array_equal(a, b) for a, b in zip(start, frozen, strict=True)), "the frozen backbone changed"
    assert not np.array_equal(recorder.head[0], recorder.head[1]), "the head did not train while frozen"
    assert any(not np.array_equal(a, b) for a, b in zip(frozen, tuned, strict=True)), "fine-tuning changed nothing"
    assert recorder.rates[1:] == pytest.approx([1e-3, 1e-4])
    assert RunSpec.from_dict(json.loads(Path(record.artifacts, "spec.json").read_text())) == spec
    assert len(keras.models.load_model(Path(record.artifacts, "model.keras")).trainable_weights) > 2  # all unfrozen


def test_freezing_an_architecture_without_a_backbone_fails_the_run_naming_the_flag(runner):
    record = runner.run(fine_tune_spec("cnn", widths=[4], convs=[1], dense=[8]))
    assert record.status == "failed" and "--freeze-epochs needs an architecture with a pretrained backbone" in (
        record.error or ""
    )
