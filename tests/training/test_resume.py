"""A run killed mid-training resumes from its last checkpointed epoch and ends as an uninterrupted run; --patience."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.config import AugmentConfig, DataConfig, OptimizerConfig, RunSpec, TrainingConfig

pytestmark = pytest.mark.needs_backend

EPOCHS = 6

# One tiny run in its own process: the tiny cnn (Dropout in its head) with random flips, whose seed states must
# come back on resume too. argv: data folder, results folder, run id.
DRIVER = f"""
import sys
from pathlib import Path
from rich.console import Console
from harness.config import AugmentConfig, DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.data import load_dataset
from harness.store.runs import RunStore
from harness.training.runner import Runner

data, results, run_id = sys.argv[1:4]
spec = RunSpec(
    "cnn",
    arch_kwargs={{"widths": [8], "convs": [1], "dense": [16], "dropout": 0.1}},
    training=TrainingConfig(
        epochs={EPOCHS}, batch_size=8, optimizer=OptimizerConfig("adam", 3e-4), augment=AugmentConfig(dihedral=True)
    ),
    data=DataConfig(protocol="stratified", seed=3),
    seed=3,
)
dataset = load_dataset(data, Path(results) / "cache", progress=False)
store = RunStore(f"sqlite:///{{Path(results) / 'harness.db'}}")
Runner(dataset, store, Path(results), progress=False, console=Console(quiet=True)).run(spec, run_id=run_id)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _driver(data: Path, results: Path, run_id: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", DRIVER, str(data), str(results), run_id]
    return subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _weights(folder: Path) -> list[np.ndarray]:
    return keras.saving.load_model(folder / "model.keras", compile=False).get_weights()


def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_result(make_kaggle, tmp_path):
    data = make_kaggle(n_train=160, n_test=8)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _driver(data, whole, "whole")  # the uninterrupted run, alongside

    victim = _driver(data, killed, "victim")
    state = killed / "runs" / "victim" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)  # as the OOM killer or a pre-empted machine would
    victim.wait()
    assert state.exists(), victim.stderr.read().decode() if victim.stderr else ""
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < EPOCHS, f"the kill came after epoch {done}: too late to test a resume"
    # The log so far survives the kill: history.csv holds every checkpointed epoch.
    assert len(pd.read_csv(killed / "runs" / "victim" / "history.csv")) >= done

    # A rerun of the killed run's id continues it, under its own id.
    argv = ["run", "victim", "--resume", "--data", str(data), "--results", str(killed), "--no-progress"]
    resumed = subprocess.run([sys.executable, "-m", "harness", *argv], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming victim" in resumed.stderr + resumed.stdout
    assert reference.wait() == 0, reference.stderr.read().decode() if reference.stderr else ""

    a, b = whole / "runs" / "whole", killed / "runs" / "victim"
    history_a, history_b = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    assert list(history_b["epoch"]) == list(range(1, EPOCHS + 1))  # no epoch trained twice or lost
    if keras.backend.backend() != "tensorflow":
        # The issue asks for equality on TensorFlow. On PyTorch the resumed epochs' losses differ by up to 1e-3
        # (the random flips' generator state does not come back bit for bit): the run still resumes, completes
        # and loses no epoch, checked above.
        return
    columns = ["loss", "accuracy", "val_loss", "val_auc", "val_accuracy"]
    np.testing.assert_allclose(history_b[columns].to_numpy(), history_a[columns].to_numpy(), rtol=1e-4, atol=1e-6)
    probs_a, probs_b = pd.read_csv(a / "val_predictions.csv"), pd.read_csv(b / "val_predictions.csv")
    np.testing.assert_allclose(probs_b["probability"], probs_a["probability"], atol=2e-6)
    for wa, wb in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_allclose(wb, wa, rtol=1e-4, atol=1e-6)

    from harness.store.runs import RunStore

    one = RunStore(f"sqlite:///{whole / 'harness.db'}").get("whole")
    two = RunStore(f"sqlite:///{killed / 'harness.db'}").get("victim")
    assert two.status == "complete" and two.epochs_run == EPOCHS and two.best_epoch == one.best_epoch
    assert two.val_auc == pytest.approx(one.val_auc, abs=1e-6)
    assert two.val_accuracy == pytest.approx(one.val_accuracy, abs=1e-6)
    assert not (b / "checkpoint").exists()  # a finished run's checkpoint is deleted


def tiny_spec(epochs: int = 2, **training) -> RunSpec:
    return RunSpec(
        architecture="cnn",
        arch_kwargs={"widths": [4], "convs": [1], "dense": [8]},
        training=TrainingConfig(epochs=epochs, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3), **training),
        data=DataConfig(protocol="stratified", seed=1),
        seed=1,
    )


def test_checkpoints_are_kept_only_when_asked(runner):
    folder = Path(runner.run(tiny_spec()).artifacts or "")
    assert (folder / "model.keras").exists() and not (folder / "checkpoint").exists()
    runner.keep_checkpoints = True
    folder = Path(runner.run(tiny_spec()).artifacts or "")
    state = json.loads((folder / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and state["finished"]
    assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == [
        "epoch2.extra.npz",
        "epoch2.weights.h5",
        "state.json",
    ]


def test_patience_stops_after_n_epochs_without_a_better_val_auc(runner):
    record = runner.run(tiny_spec(epochs=12, patience=2, augment=AugmentConfig()))
    history = pd.read_csv(Path(record.artifacts or "") / "history.csv")
    assert record.status == "complete" and record.epochs_run == len(history) < 12
    auc = history["val_auc"].to_numpy()
    best_before = auc[:-2].max()
    assert (auc[-2:] <= best_before).all()  # the last two epochs did not beat the best before them
    assert record.val_auc == pytest.approx(auc.max(), abs=1e-9)  # the best epoch's weights were kept


@pytest.mark.backend_free
def test_resume_refuses_a_complete_run_and_changed_settings(runner, tmp_path, capsys):
    record = runner.run(tiny_spec(epochs=1))
    where = ["--data", str(runner.dataset.root), "--results", str(tmp_path / "results")]
    where += ["--storage", runner.store.url]
    assert main(["run", record.run_id, "--resume", *where]) != 0
    err = capsys.readouterr().err
    assert f"run {record.run_id} is complete" in err and "Traceback" not in err
    assert main(["run", record.run_id, "--resume", "--epochs", "3", *where]) != 0
    err = capsys.readouterr().err
    assert "--resume continues a run with its own settings; drop epochs" in err and "Traceback" not in err
