"""Build gpu_pack/: a 5,000-image balanced slice of pcam-sample, 1,500 labelled test images and the wheels a GPU
image lacks, under the device tool's 64 MiB transfer limit. Usage: python benchmarks/device/make_pack.py [SAMPLE]."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "gpu_pack"  # ignored by git: data and wheels never enter the repository
WHEELS = ["keras==3.15.1", "keras-tuner==1.4.8", "kt-legacy", "optuna==4.9.0", "sqlalchemy", "alembic", "mako",
          "colorlog", "simplejpeg", "namex", "optree", "greenlet"]  # fmt: skip


def main(sample: Path) -> None:
    data = PACK / "pcam"
    shutil.rmtree(PACK, ignore_errors=True)
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    train = pd.read_csv(sample / "train_labels.csv")
    train = pd.concat([g.sample(2500, random_state=7) for _, g in train.groupby("label")]).sample(
        frac=1, random_state=7
    )
    train.to_csv(data / "train_labels.csv", index=False)
    test = pd.read_csv(sample / "test_labels.csv")
    test = pd.concat([g.sample(750, random_state=7) for _, g in test.groupby("label")]).sample(frac=1, random_state=7)
    test.to_csv(data / "test_labels.csv", index=False)
    test.assign(label=0).to_csv(data / "sample_submission.csv", index=False)
    for folder, ids in (("train", train.id), ("test", test.id)):
        for image_id in ids:
            shutil.copy(sample / folder / f"{image_id}.jpg", data / folder)
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
           "-d", str(PACK / "wheels")]  # fmt: skip
    subprocess.run(pip + WHEELS, check=True)
    size = sum(p.stat().st_size for p in PACK.rglob("*") if p.is_file())
    print(f"{PACK}: {len(train)} train, {len(test)} test images, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/pcam-sample"))
