"""What a new user meets in the first hour: lines that fit 80 columns, progress for long phases, a Ctrl-C message
that names the run and its resume command, an API that plans what it runs and keeps as quiet as the command."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console

from harness.terminal.consoles import fitted
from harness.terminal.progress import phase

pytestmark = pytest.mark.backend_free


def terminal(width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, force_terminal=True, color_system=None), buffer


PARTS = ["modern-optuna #12 resnet  epoch 2/3", "loss 0.4213", "val acc 0.8442", "val AUC 0.9136", "16.8 s",
         "eta 0:22", "(study: 12/50 trials done, elapsed 10:01, eta 31:40)"]  # fmt: skip


def test_a_long_line_fits_80_columns_on_a_terminal_dropping_its_last_parts_never_splitting_one():
    console, _ = terminal(80)
    line = fitted(console, PARTS, drop=[6, 5, 4, 1, 2, 3])  # the epoch line's order: val AUC is the last to go
    assert len(line) < 80 and line.startswith(PARTS[0]) and "val AUC 0.9136" in line and "loss" not in line
    assert fitted(console, PARTS).endswith("val acc 0.8442")  # by default the last parts go first
    assert all(part in line for part in line.split("  ") if part)  # whole parts only: no "16." then "8 s"
    log = Console(file=io.StringIO(), width=80)  # off a terminal every part is kept: a log line is never wrapped
    assert fitted(log, PARTS) == "  ".join(PARTS)


def test_an_epoch_line_fits_80_columns():
    from harness.terminal.progress import EpochLines

    console, _ = terminal(80)
    clock = EpochLines("modern-optuna #12 resnet", 3, console)
    clock.epoch_seconds = [16.8]
    line = clock.epoch_line(1, {"loss": 0.42, "val_accuracy": 0.84, "val_auc": 0.91})
    assert len(line) < 80 and "val AUC 0.9100" in line
    between = clock.epoch_line(1, {"loss": 0.42, "val_accuracy": float("nan"), "val_auc": float("nan")})
    assert "nan" not in between and "val AUC -" in between  # an epoch between rungs is not validated


def test_a_long_phase_says_so_off_a_terminal_and_when_it_ends():
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    with phase(console, "predicting data/test with TTA 8", 24_000) as advance:
        advance(12_000)
        advance(12_000)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "predicting data/test with TTA 8: 24,000 images ..."
    assert lines[-1].startswith("predicting data/test with TTA 8: 24,000 images in ")


def test_a_long_phase_shows_a_bar_on_a_terminal():
    console, buffer = terminal(100)
    with phase(console, "seed_model2: test set", 10_000) as advance:
        for _ in range(10):
            advance(1_000)
    assert "seed_model2: test set: 10,000 images in " in buffer.getvalue()


def test_a_plain_script_is_as_quiet_as_the_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "HARNESS_VERBOSE")}
    code = f"import harness; print(harness.plan('baselines', results={str(tmp_path)!r})[0].training.epochs)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"  # the demo's budget, as `harness run` trains it
    for noise in ("cuInit", "oneDNN", "absl", "cuda drivers"):
        assert noise not in done.stderr, done.stderr


def test_plan_takes_the_same_keywords_and_shows_what_run_trains(make_kaggle, tmp_path):
    import harness

    demo = harness.plan("baselines", results=tmp_path / "R")
    assert [s.training.epochs for s in demo] == [1, 1, 1]  # on the demo: one epoch each, as `run` trains
    full = harness.plan("baselines", data=make_kaggle(n_train=8, n_test=4), results=tmp_path / "R")
    assert [s.training.epochs for s in full] == [10, 30, 30]  # the notebook's budget with --data
    assert [s.training.epochs for s in harness.plan("baselines", results=tmp_path / "R", full_budget=True)] == [
        10,
        30,
        30,
    ]
