"""The Python API: `harness.run/search/leaderboard` do what the commands do, with the same defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest
import search_fixtures as sf

import harness
from harness.cli import build_parser, main
from harness.cli.flags import given_settings
from harness.config import OptimizerConfig, RunSpec
from harness.store.runs import RunStore, default_storage


@pytest.mark.backend_free
def test_import_harness_is_cheap():
    code = "import harness, sys; harness.__version__; assert 'keras' not in sys.modules, 'keras was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.backend_free
def test_python_and_the_command_plan_the_same_spec_for_a_registered_model():
    """`harness.run("seed_model2")` trains the notebook's Adam(1e-4), as `harness run seed_model2` does."""
    argv = ["run", "seed_model2", "--epochs", "2", "--sample", "400", "--dihedral", "--seed", "5"]
    args = build_parser().parse_args(argv)
    (from_cli,) = harness.plan(args.targets, **given_settings(args))  # the settings exactly as the command passes
    (from_python,) = harness.plan("seed_model2", epochs=2, sample=400, dihedral=True, seed=5)
    assert from_python == from_cli
    assert from_python.training.optimizer.name == "adam" and from_python.training.optimizer.learning_rate == 1e-4
    assert from_python.origin.kind == "baseline" and from_python.seed == from_python.data.seed == 5
    assert RunSpec("seed_model2").training.optimizer == OptimizerConfig()  # the bare spec is no registered default
    with pytest.raises(harness.errors.ConfigError, match="did you mean 'epochs'"):
        harness.plan("cnn", epoch=1)


@pytest.mark.slow  # a run and a two-trial search end to end
def test_a_notebook_does_run_search_and_leaderboard_in_five_lines(make_kaggle, tmp_path, capsys):
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    with sf.registered():
        where = {"data": data, "results": results}
        (run,) = harness.run("cnn", epochs=1, protocol="stratified", seed=1, **where)
        summary = harness.search(space="tiny", trials=2, epochs=1, protocol="stratified", seed=1, **where)
        board = harness.leaderboard(by="val_auc", **where)
    assert run.status == "complete" and summary.after == 2
    assert sorted(board["run"]) == sorted([run.run_id, *(r.run_id for r in summary.runs)])
    assert board["rank"].notna().all() and not (results / "submission.csv").exists()

    # The command stores the very spec the library did.
    argv = ["run", "cnn", "--epochs", "1", "--protocol", "stratified", "--seed", "1", "--no-progress"]
    assert main([*argv, "--data", str(data), "--results", str(results)]) == 0
    again = [r for r in RunStore(default_storage(results)).runs() if r.origin == "run"]
    assert len(again) == 2 and again[0].spec == again[1].spec
    assert "rank" in capsys.readouterr().out
