"""`harness bench` on tiny data, the seed's PrepareData reproduction, the synthetic Kaggle folder, mixed precision."""

from __future__ import annotations

import json
import os
import re

import keras
import numpy as np
import pytest
from conftest import train_ids_of

from harness.bench.seed_way import prepare
from harness.cli import main
from harness.config import TrainingConfig
from harness.cost import architecture_cost, model_cost
from harness.data import load_dataset
from harness.data.splits import seed_protocol_split
from harness.data.synth import KAGGLE_POSITIVE, KAGGLE_TRAIN, write_kaggle_folder
from harness.errors import ConfigError
from harness.registry import build_model
from harness.training.train import compile_model, float32_output, precision_policy, with_input_pipeline

COLUMNS = ("stage", "measure", "images", "seed img/s", "harness img/s", "ratio", "target", "met")


def table_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows (first line of each) of a rich table printed with box characters."""
    lines = [line for line in text.splitlines() if line.startswith(("┃", "│"))]
    cells = [[c.strip() for c in line.strip("┃│").split("┃" if line.startswith("┃") else "│")] for line in lines]
    return cells[0], [c for c in cells[1:] if c[0]]


def test_bench_prints_every_stage_side_by_side(tmp_path, capsys):
    report = tmp_path / "bench.json"
    argv = ["bench", "--synthetic", "300", "--repeats", "1", "--steps", "2", "--predict-images", "8"]
    code = main([*argv, "--no-knobs", "--no-data-check", "--work", str(tmp_path), "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, err
    header, rows = table_rows(out)
    assert tuple(header[: len(COLUMNS)]) == COLUMNS
    by_stage = {stage: [r for r in rows if r[0] == stage] for stage in ("prepare", "feed", "train", "predict")}
    assert all(by_stage.values()), rows
    # The seed's ImageDataGenerator is Keras 3's own class: every stage has a seed column on every backend.
    for stage, stage_rows in by_stage.items():
        for row in stage_rows:
            assert float(row[4].replace(",", "")) > 0, (stage, row)
            seed, ratio = (float(row[i].lstrip("~").replace(",", "").rstrip("x")) for i in (3, 5))
            assert seed > 0 and ratio > 0, (stage, row)
            assert re.fullmatch(r">= [\d.]+x", row[6]) and row[7] in ("yes", "NO")
    assert len(by_stage["prepare"]) == 2  # sample/10 and sample: the scaling is shown
    assert "feed/train" in {r[0] for r in rows}
    saved = json.loads(report.read_text())
    assert {r["stage"] for r in saved["rows"]} >= {"prepare", "feed", "train", "predict", "feed/train"}
    assert all(r["harness"] > 0 for r in saved["rows"])
    (predict,) = [r for r in saved["rows"] if r["stage"] == "predict"]
    assert re.search(r"0\.57 GFLOP/image: seed \d+%, harness \d+% of the [\d,]+ GFLOP/s", predict["note"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("harness-bench-")]  # scratch removed


def test_model_cost_counts_convolutions_and_dense_layers_inside_nested_models():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 outputs x 4 filters x 3*3*2 weights = 4,608
    x = keras.layers.Conv2D(5, 3)(x)  # valid: 6*6 x 5 x 3*3*4 = 6,480
    x = keras.layers.Dense(7)(keras.layers.Flatten()(x))  # 180 x 7 = 1,260
    inner = keras.Model(inputs, x)
    outer = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Rescaling(0.5), inner])
    macs = 4608 + 6480 + 1260
    assert model_cost(inner).gmacs * 1e9 == pytest.approx(macs) and model_cost(outer).gmacs * 1e9 == pytest.approx(macs)
    # The seed's model 2, as the bench's predict rows and search_spaces.widen's --max-gmacs count it: 0.28 GMACs.
    assert model_cost(build_model("seed_model2")).gmacs == pytest.approx(0.2848, rel=1e-3)
    assert architecture_cost("seed_model2").gmacs == pytest.approx(0.2848, rel=1e-3)


@pytest.mark.backend_free
def test_bench_times_the_whole_prepare_commands_beside_the_stage(tmp_path, capsys):
    """Issue 16: `harness data check` and the seed's PrepareData, each a new process, side by side with a ratio."""
    report = tmp_path / "bench.json"
    argv = ["bench", "--synthetic", "40", "--stages", "prepare", "--repeats", "1", "--work", str(tmp_path)]
    assert main([*argv, "--json", str(report)]) == 0, capsys.readouterr().err
    rows = [r for r in json.loads(report.read_text())["rows"] if r["stage"] == "prepare"]
    (stage,) = [r for r in rows if "whole commands" not in r["what"]]
    (whole,) = [r for r in rows if "whole commands" in r["what"]]
    assert whole["images"] == stage["images"]  # the same folder both ways, beside the stage figure
    assert whole["seed"] > 0 and whole["harness"] > 0 and whole["target"] == 20
    assert whole["ratio"] == pytest.approx(whole["harness"] / whole["seed"]) and whole["met"] in ("yes", "NO")
    seconds = [float(s) for s in re.findall(r"([\d.]+) s in all", whole["note"])]
    assert len(seconds) == 2 and "peak RSS" in whole["note"]  # harness's seconds, then the seed's
    ours, seed = seconds
    # The note rounds seconds to 0.1 s: the rates' own seconds must round to what it says.
    assert whole["images"] / whole["harness"] == pytest.approx(ours, abs=0.05 + 1e-9)
    assert whole["images"] / whole["seed"] == pytest.approx(seed, abs=0.05 + 1e-9)
    # A whole process pays start-up and imports: slower per image than the same work timed in-process.
    assert whole["harness"] < stage["harness"] and whole["seed"] < stage["seed"]


def test_bench_refuses_bad_flags_in_one_line(capsys, tmp_path):
    assert main(["bench", "--stages", "prepare,fly", "--work", str(tmp_path)]) == 2
    assert "unknown stage fly" in capsys.readouterr().err
    assert main(["bench", "--data", str(tmp_path / "nowhere"), "--work", str(tmp_path)]) == 2
    assert "is not a Kaggle folder" in capsys.readouterr().err
    assert main(["bench", "--models", "no_such_model", "--work", str(tmp_path)]) == 2
    assert "unknown architecture" in capsys.readouterr().err


def test_seed_prepare_reproduces_the_notebook_split(make_kaggle, tmp_path):
    data = make_kaggle(n_train=40, n_test=6)
    done = prepare(data, tmp_path / "seed")
    # The notebook balances (20 + 20 here), then train_test_split(test_size=0.15): 34 train, 6 validation.
    assert sum(done.counts[k] for k in ("train/0", "train/1")) == 34
    assert sum(done.counts[k] for k in ("val/0", "val/1")) == 6
    assert done.counts["test"] == 6 and done.seconds > 0
    ids = np.asarray(train_ids_of(data))
    labels = np.arange(40) % 2  # make_kaggle_folder's labels
    split = seed_protocol_split(ids, labels, seed=101)
    for side, index in (("train", split.train), ("val", split.val)):
        for label in (0, 1):
            written = {p[:-4] for p in os.listdir(tmp_path / "seed" / f"{side}_dir" / str(label))}
            assert written == {i for i in ids[index] if labels[list(ids).index(i)] == label}
    assert all(p.endswith(".png") for p in os.listdir(done.test_png))


def test_synthetic_folder_is_kaggle_shaped_and_distinct(tmp_path):
    root = write_kaggle_folder(tmp_path / "k", n_train=400, n_test=40, seed=1)
    ds = load_dataset(root, tmp_path / "cache", progress=False)
    assert ds.synthetic and len(ds.train) == 400 and len(ds.test) == 40
    assert int(ds.train.labels.sum()) == round(400 * KAGGLE_POSITIVE / KAGGLE_TRAIN)
    assert len(np.unique(np.concatenate([ds.train.digests, ds.test.digests]))) == 440  # no accidental duplicates
    assert {p.stat().st_size for p in (root / "train").iterdir()} == {27_830}  # uncompressed, as Kaggle's
    with pytest.raises(Exception, match="not an empty folder"):
        write_kaggle_folder(root, n_train=8, n_test=2)


@pytest.mark.parametrize("precision", ["mixed", "mixed_bfloat16"])
def test_mixed_precision_keeps_a_float32_output_and_trains(precision):
    before = keras.config.dtype_policy().name
    with precision_policy(precision):
        core = float32_output(build_model("seed_model2"))
    assert keras.config.dtype_policy().name == before  # the global policy is restored
    assert core.layers[0].compute_dtype != "float32" and core.layers[-1].compute_dtype == "float32"
    model = compile_model(with_input_pipeline(core), TrainingConfig(precision=precision))
    assert ("LossScale" in type(model.optimizer).__name__) == (precision == "mixed")
    x = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    loss = model.train_on_batch(x, np.array([0, 1, 0, 1], dtype="float32"))
    assert np.isfinite(loss).all()
    out = model.predict(x, verbose=0)
    assert out.dtype == np.float32 and out.shape == (4, 1)


def test_precision_is_validated_and_float32_is_untouched():
    with pytest.raises(ConfigError, match="--precision"):
        TrainingConfig(precision="half")
    model = build_model("seed_model2")
    assert float32_output(model) is model
