"""Tables that fit: the leaderboard and `harness list` at 80, 120 and 200 columns, every number whole."""

from __future__ import annotations

import argparse
import datetime as dt
from io import StringIO

import pytest
from rich.cells import cell_len
from rich.console import Console

from harness.errors import HarnessError
from harness.ranking.leaderboard import choose_columns, comparable, rank, render_table
from harness.store.runs import RunRecord

# Storage and rendering: the Keras backend cannot change the outcome (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free

WIDTHS = (80, 120, 200)


def _record(run_id, arch, acc, auc, params, sample, n_val, minutes, **extra) -> RunRecord:
    when = dt.datetime(2026, 11, 27) + dt.timedelta(minutes=minutes)
    data = {"protocol": "seed", "sample": sample, "seed": 101, "val_fraction": 0.15, "folds": 1}
    values = {
        "status": "complete",
        "origin": "baseline",
        "epochs_run": 1,
        "seconds": 10.8,
        "images_per_second": 173.4,
        "backend": "tensorflow",
        "dataset": "/data/pcam",
        "submission": f"/results/runs/{run_id}/submission.csv",
    }
    values.update(extra)
    return RunRecord(
        run_id=run_id,
        architecture=arch,
        spec={"data": data},
        created_at=when,
        updated_at=when,
        val_accuracy=acc,
        val_auc=auc,
        parameters=params,
        n_val=n_val,
        **values,
    )


# A real session's shapes: baselines on sample 2000 (300 validation images), a search trial and a cross-validated
# run on sample 1000, an ensemble, a pruned trial.
RECORDS = [
    _record("20261127-173747-seed_model1-54fda3", "seed_model1", 0.7767, 0.8726, 36_350_881, 2000, 300, 0),
    _record("20261127-173802-seed_model2-a890ce", "seed_model2", 0.7600, 0.8658, 1_846_817, 2000, 300, 1),
    _record("20261127-173822-seed_model3-bfd14c", "seed_model3", 0.5533, 0.5223, 3_510_913, 2000, 300, 2),
    _record("20261127-183054-cnn-8a4c90", "cnn", 0.8133, 0.8850, 12_003_201, 1000, 150, 3, origin="search",
            study="pcam-cpu", trial=35, tuner="optuna"),
    _record("20261127-190000-ensemble3-1f2e3d", "ensemble3", 0.8200, 0.8886, 50_201_000, 1000, 150, 4,
            origin="ensemble"),
    _record("20261127-191000-cnn-77aa00", "cnn", None, None, None, 1000, 150, 5, status="pruned", origin="search",
            study="pcam-cpu", trial=36, tuner="optuna", submission=None),
    _record("20261127-192000-seed_model2-c0ffee", "seed_model2", 0.7412, 0.8123, 1_846_817, 2000, 300, 6,
            val_accuracy_std=0.0123, val_auc_std=0.0456),
]  # fmt: skip


def _render(renderable, width: int) -> str:
    console = Console(width=width, file=StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _frame(mix: bool, holdout: bool):
    frame = comparable(rank(RECORDS), mix=mix).frame
    if holdout:  # what --holdout (or its older name --test-labels) adds: see harness.ranking.holdout.add_holdout
        held = [0.8288 - i / 100 if s == "complete" else None for i, s in enumerate(frame["status"])]
        frame = frame.assign(holdout_auc=held).assign(gap=lambda f: f["val_auc"] - f["holdout_auc"])
    return frame


def _numbers(row) -> list[str]:
    """The numbers a row must show whole at 80 columns (the parameters whole, or rounded as 36.35M)."""
    numbers = [f"{row['val_accuracy']:.4f}", f"{row['val_auc']:.4f}"]
    if "holdout_auc" in row and row["holdout_auc"] == row["holdout_auc"]:
        numbers.append(f"{row['holdout_auc']:.4f}")
    return numbers


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("mix", "holdout"), [(False, False), (False, True), (True, True)])
def test_the_leaderboard_fits_and_shows_every_number_whole(width, mix, holdout):
    frame = _frame(mix, holdout)
    text = _render(render_table(frame, "leaderboard by val_accuracy"), width)
    lines = text.splitlines()
    assert "…" not in text, text
    assert all(cell_len(line.rstrip()) <= width for line in lines), text
    header = next(line for line in lines if line.startswith("rank"))
    for name in ("rank", "run", "architecture", "val acc", "val AUC", "params"):
        assert name in header, (name, text)
    if holdout:
        assert "holdout AUC" in header, text
    if mix:  # runs on several validation sets: the column that says which is shown
        assert "sample · val" in header, text
    for _, row in frame.iterrows():
        tail = row["run"].rsplit("-", 1)[-1]
        line = next(line for line in lines if tail in line.split() or row["run"] in line.split())
        tokens = line.split()
        assert row["architecture"] in tokens
        if row["status"] != "complete":
            continue
        assert str(int(row["rank"])) == tokens[0]
        for number in _numbers(row):
            assert number in tokens, (number, line)
        if "val-holdout" in header:  # the gap, when it fits, is whole and signed
            assert f"{row['gap']:+.4f}" in tokens, line
        if row["val_accuracy_std"] == row["val_accuracy_std"] and (width >= 200 or "±" in tokens):
            # A cross-validated run's spread over folds, when shown (always at 200 columns), is whole too.
            assert f"{row['val_accuracy_std']:.4f}" in tokens and f"{row['val_auc_std']:.4f}" in tokens, line
        params = int(row["parameters"])
        assert f"{params:,}" in tokens or f"{params / 1e6:.2f}M" in tokens, line


def test_the_widest_table_shows_full_run_ids_and_every_column():
    text = _render(render_table(_frame(mix=True, holdout=True), "t"), 240)
    for record in RECORDS:
        assert record.run_id in text
    for header in ("origin", "status", "epochs", "time s", "img/s", "backend", "submission", "sample · val"):
        assert header in text
    assert "holdout AUC" in text and "val-holdout" in text


def test_narrower_than_the_essential_columns_each_run_becomes_lines_of_whole_values():
    frame = _frame(mix=False, holdout=False)
    text = _render(render_table(frame, "leaderboard by val_accuracy"), 16)
    assert "…" not in text
    words = text.replace(";", " ").split()
    for _, row in frame[frame["status"] == "complete"].iterrows():
        assert f"{row['val_accuracy']:.4f}" in words and f"{row['val_auc']:.4f}" in words


def test_columns_picks_the_columns_and_refuses_an_unknown_name_in_one_line():
    frame = _frame(mix=False, holdout=False)
    columns = choose_columns("rank,val_auc,run", frame)
    assert columns == ["rank", "val_auc", "run"]
    text = _render(render_table(frame, "t", columns=columns), 80)
    header = next(line for line in text.splitlines() if "rank" in line)
    assert header.split() == ["rank", "val", "AUC", "run"]
    assert frame["run"].iloc[0] in text  # an explicit `run` is the full id
    with pytest.raises(HarnessError, match="unknown column 'nope'; choose from rank, run, architecture") as info:
        choose_columns("rank,nope", frame)
    assert "\n" not in str(info.value)
    with pytest.raises(HarnessError, match="--columns holdout_auc needs --holdout"):
        choose_columns("rank,holdout_auc", frame)


def test_columns_has_one_name_for_the_holdout_score_and_test_auc_is_unknown():
    held = _frame(mix=False, holdout=True)
    assert choose_columns("rank,holdout_auc,gap", held) == ["rank", "holdout_auc", "gap"]
    # --holdout and its older name --test-labels both give holdout_auc: test_auc is no alias of it any more.
    with pytest.raises(HarnessError, match=r"unknown column 'test_auc'; choose from .*holdout_auc, gap") as info:
        choose_columns("rank,test_auc", held)
    assert "\n" not in str(info.value)
    with pytest.raises(HarnessError, match="unknown column 'test_auc'"):
        choose_columns("rank,test_auc", _frame(mix=False, holdout=False))


def test_list_at_80_columns_keeps_descriptions_whole_instead_of_a_word_a_line(monkeypatch):
    import functools

    from harness import registry
    from harness.cli import cmd_list
    from harness.registry import ARCHITECTURES, SEARCH_SPACES

    monkeypatch.setattr(registry, "build_model", functools.cache(registry.build_model))  # build each model once
    for width in WIDTHS:
        console = Console(width=width, file=StringIO(), color_system=None)
        cmd_list(argparse.Namespace(), console, console)
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert all(cell_len(line.rstrip()) <= width for line in text.splitlines()), text
        flowing = " ".join(text.split())
        for entry in [*ARCHITECTURES, *SEARCH_SPACES]:
            # Read in order, each description is one run of words: never interleaved with other columns' cells.
            assert " ".join(entry.description.split()) in flowing, (width, entry.name, text)
        for line in text.splitlines():
            assert "…" not in line
