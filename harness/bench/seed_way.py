"""The seed notebook's own pipeline (PrepareData, ImageDataGenerator, batch-1 predict) for `bench`, on any backend."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils import shuffle

from harness.data.splits import SEED_DROPPED_IDS, SEED_SAMPLE_STATE, SEED_TEST_SIZE
from harness.errors import HarnessError

SEED_BATCH = 50
SIZE = (96, 96)


@dataclass(frozen=True)
class Prepared:
    """What the notebook's PrepareData wrote: its folders and how many images went where."""

    train_dir: Path
    val_dir: Path
    test_png: Path
    counts: dict[str, int]  # "train/0", "train/1", "val/0", "val/1", "test"
    seconds: float


class PrepareData:
    """The notebook's class, call for call, with its folders made explicit (it reads and writes in the cwd).

    Two liberties, both about where, never how: paths are joined to `data_dir` and `work_dir`, and the file
    extension is the folder's own (the shared sample holds .jpg; Kaggle .tif). `shuffle` gets `random_state`,
    which draws what the notebook draws after `np.random.seed(random_state)`, as harness.data.splits documents.
    """

    def __init__(self, data_dir: Path, work_dir: Path, random_state: int = SEED_SAMPLE_STATE, ext: str = ".tif"):
        self.data_dir, self.work_dir, self.ext = Path(data_dir), Path(work_dir), ext
        self.df_label = pd.read_csv(self.data_dir / "train_labels.csv")
        self.df_label = self.df_label[self.df_label["id"] != SEED_DROPPED_IDS[0]]
        self.df_label = self.df_label[self.df_label["id"] != SEED_DROPPED_IDS[1]]
        n1 = self.df_label["label"].value_counts()[1]
        df_0 = self.df_label[self.df_label["label"] == 0].sample(n1, random_state=SEED_SAMPLE_STATE)
        df_1 = self.df_label[self.df_label["label"] == 1].sample(n1, random_state=SEED_SAMPLE_STATE)
        self.df_label = pd.concat([df_0, df_1], axis=0).reset_index(drop=True)
        self.df_label = shuffle(self.df_label, random_state=random_state)
        self.df_train, self.df_val = train_test_split(
            self.df_label, test_size=SEED_TEST_SIZE, random_state=SEED_SAMPLE_STATE
        )

    def create_folders(self, train_dir: str) -> None:
        for folder in (train_dir, os.path.join(train_dir, "0"), os.path.join(train_dir, "1")):
            os.mkdir(self.work_dir / folder)

    def export_data_to_folders(self, train_dir: str) -> None:
        if train_dir == "train_dir":
            self.df_label = self.df_train
        elif train_dir == "val_dir":
            self.df_label = self.df_val
        for image in self.df_label["id"]:
            # The notebook's lookup: a filter over the whole table for every image, so quadratic in its size.
            target = int(self.df_label[self.df_label["id"] == image]["label"])
            departure = os.path.join(self.data_dir, "train", image + self.ext)
            destination = os.path.join(self.work_dir, train_dir, str(target), image + ".png")
            cv2_image = cv2.imread(departure)
            cv2.imwrite(destination, cv2_image)  # type: ignore[arg-type]  # the notebook's call, None and all

    def test_data(self) -> None:
        pattern = os.path.join(self.data_dir, "test", "*" + self.ext)
        images_path = glob.glob(pattern)  # unused, as in the notebook, which globs twice
        file = [os.path.basename(x.replace(self.ext, "")) for x in glob.glob(pattern)]
        del images_path
        os.mkdir(self.work_dir / "test_png")
        for image in file:
            departure = os.path.join(self.data_dir, "test", image + self.ext)
            destination = os.path.join(self.work_dir, "test_png", image + ".png")
            cv2_image = cv2.imread(departure)
            cv2.imwrite(destination, cv2_image)  # type: ignore[arg-type]  # the notebook's call, None and all


def folder_extension(data_dir: Path) -> str:
    """The image extension of a Kaggle folder's train/ (the notebook hard-codes .tif)."""
    with os.scandir(Path(data_dir) / "train") as entries:
        for entry in entries:
            ext = os.path.splitext(entry.name)[1]
            if ext.lower() in (".tif", ".tiff", ".png", ".jpg", ".jpeg"):
                return ext
    raise HarnessError(f"{Path(data_dir) / 'train'} holds no images")


def prepare(data_dir: Path, work_dir: Path, random_state: int = SEED_SAMPLE_STATE) -> Prepared:
    """Run the notebook's cell 6 (PrepareData, both exports, the test conversion) into an empty `work_dir`."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if any(work_dir.iterdir()):
        raise HarnessError(f"{work_dir} is not empty; the seed's PrepareData needs a fresh folder")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        data = PrepareData(data_dir, work_dir, random_state, folder_extension(data_dir))
        data.create_folders("train_dir")
        data.create_folders("val_dir")
        data.export_data_to_folders("train_dir")
        data.export_data_to_folders("val_dir")
        data.test_data()
    seconds = time.perf_counter() - start
    counts = {
        f"{side}/{label}": len(os.listdir(work_dir / f"{side}_dir" / label))
        for side in ("train", "val")
        for label in ("0", "1")
    }
    counts["test"] = len(os.listdir(work_dir / "test_png"))
    return Prepared(work_dir / "train_dir", work_dir / "val_dir", work_dir / "test_png", counts, seconds)


def image_data_generator() -> type:
    """The notebook's `tensorflow.keras.preprocessing.image.ImageDataGenerator`, imported without TensorFlow.

    With Keras 3, `tensorflow.keras` serves this very module (the classes are identical objects), and the class
    is NumPy, PIL and a Keras PyDataset: the seed's loading runs unchanged on the JAX and PyTorch backends too.
    """
    try:
        from keras._tf_keras.keras.preprocessing.image import ImageDataGenerator
    except ImportError:  # a Keras that moved its private export path
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    return ImageDataGenerator


def train_generator(train_dir: Path, batch_size: int = SEED_BATCH, shuffle_batches: bool = True):
    """The notebook's cell 7: ImageDataGenerator(rescale=1/255).flow_from_directory, batch 50, binary labels."""
    datagen = image_data_generator()(rescale=1 / 255)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Found N images belonging to 2 classes."
        return datagen.flow_from_directory(
            str(train_dir),
            target_size=SIZE,
            batch_size=batch_size,
            class_mode="binary",
            color_mode="rgb",
            shuffle=shuffle_batches,
        )


def test_generator(test_dir: Path, files: list[str]):
    """The notebook's pred_test: flow_from_dataframe over test file names, batch size 1, in listing order."""
    datagen_test = image_data_generator()(rescale=1 / 255)
    test_df = pd.DataFrame({"id": files})
    with contextlib.redirect_stdout(io.StringIO()):
        return datagen_test.flow_from_dataframe(
            dataframe=test_df,
            directory=str(test_dir),
            x_col="id",
            y_col=None,
            target_size=SIZE,
            batch_size=1,
            shuffle=False,
            class_mode=None,
        )


def feed_seconds(generator) -> tuple[int, float]:
    """Seconds to draw one epoch of batches from the notebook's generator; returns (images, seconds)."""
    start = time.perf_counter()
    n = 0
    for i in range(len(generator)):
        x, _ = generator[i]
        n += len(x)
    seconds = time.perf_counter() - start
    generator.on_epoch_end()
    return n, seconds


def compile_like_notebook(model, optimizer):
    """The notebook compiles each model with binary cross-entropy and accuracy alone."""
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def predict(model, generator) -> np.ndarray:
    """The notebook's `model.predict(test_gen)` on its batch-1 generator, as probabilities."""
    return np.asarray(model.predict(generator, verbose=0), dtype=np.float64).reshape(-1)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.bench.seed_way DATA WORK`: the notebook's PrepareData cell as a process of its own, so
    that the bench times it whole (interpreter start and imports included), as it times `harness data check`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.bench.seed_way DATA_DIR WORK_DIR", file=sys.stderr)
        return 2
    try:
        prepare(Path(args[0]), Path(args[1]))
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
