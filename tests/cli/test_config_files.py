"""Config files: `--config` TOML or YAML for run and search (a flag given wins), a run's spec.json reruns it, and a
bad key or value is one line that names it and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import harness
from harness.cli import main, parse_args
from harness.cli.flags import given_settings
from harness.config_files import read
from harness.settings import given
from harness.store.runs import RunStore, default_storage
from harness.tuning.study_settings import StudySettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> dict:
    return read(EXAMPLES / name)  # the parsed file (tomllib, or tomli on Python 3.10)


@pytest.mark.backend_free
def test_the_run_example_plans_its_settings_and_a_flag_given_wins():
    file = example("run.toml")
    args = parse_args(["run", "--config", str(EXAMPLES / "run.toml"), "--epochs", "2", "--tta", "2"])
    (planned,) = harness.plan(args.targets, **given_settings(args))
    # The same settings as keyword arguments (the fields' names), the command line's two on top.
    settings = {k: v for k, v in file.items() if k not in ("targets", "data")}
    settings |= {"epochs": 2, "tta": 2, "time_limit": file["time_limit"] * 60}  # minutes, as --time-limit
    (expected,) = harness.plan(file["targets"], **settings)
    assert planned == expected
    assert (planned.architecture, planned.training.epochs, planned.training.tta) == ("seed_model2", 2, 2)
    assert planned.training.lr_schedule == "cosine" and planned.data.sample == file["sample"] == 20000
    assert args.data == file["data"]
    # A positional target given wins over the file's targets.
    assert parse_args(["run", "cnn", "--config", str(EXAMPLES / "run.toml")]).targets == ["cnn"]


@pytest.mark.backend_free
@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_a_yaml_file_reads_as_the_toml_one(suffix, tmp_path):
    path = tmp_path / f"run{suffix}"
    path.write_text(yaml.safe_dump(example("run.toml")))
    from_yaml = parse_args(["run", "--config", str(path)])
    from_toml = parse_args(["run", "--config", str(EXAMPLES / "run.toml")])
    assert from_yaml.targets == from_toml.targets == ["seed_model2"]
    assert given_settings(from_yaml) == given_settings(from_toml) != {}


@pytest.mark.backend_free
def test_the_search_example_sets_the_study_and_a_flag_given_wins():
    file = example("search.toml")
    args = parse_args(["search", "--config", str(EXAMPLES / "search.toml"), "--trials", "3", "--epochs", "1"])
    assert (args.trials, args.study, args.data) == (3, file["study"], file["data"])
    assert args.timeout == file["timeout"] * 60  # minutes in the file, as on the flag; seconds in the library
    settings = StudySettings.from_dict({**given(args, StudySettings), **given_settings(args)})
    expected = {k: v for k, v in file.items() if k in StudySettings.names()} | {"epochs": 1}
    assert settings == StudySettings.from_dict(expected)
    assert (settings.space, settings.max_gmacs, settings.epochs, settings.sample) == ("widen", 0.63, 1, 20000)
    assert settings.training.augment.dihedral and settings.protocol == "stratified"


@pytest.mark.backend_free
@pytest.mark.parametrize(
    "name, text, needles",
    [
        ("typo.toml", "epoch = 2\n", ["unknown key 'epoch'", "did you mean 'epochs'?"]),
        ("typo.yaml", "lr-schedul: cosine\n", ["unknown key 'lr_schedul'", "did you mean 'lr_schedule'?"]),
        ("word.toml", 'epochs = "three"\n', ['epochs = "three"', "expected a whole number"]),
        ("choice.yml", "tta: 3\n", ["tta = 3", "expected one of 1, 2, 4, 8"]),
        ("flag.toml", "dihedral = 1\n", ["dihedral = 1", "expected true or false"]),
        ("range.toml", "brightness = 1.5\n", ["--brightness must be in [0, 1), got 1.5 (brightness in"]),
        ("table.toml", "[training]\nepochs = 2\n", ["[training] is a table", "flat keys"]),
        ("broken.toml", "epochs = [\n", ["not valid TOML"]),
        ("spec.json", "{}", ["a config file is .toml, .yaml or .yml", "harness run path/to/spec.json"]),
    ],
)
def test_a_bad_key_or_value_is_one_line_that_names_it_and_the_file(name, text, needles, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(text)
    code = main(["run", "cnn", "--config", str(path), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.backend_free
def test_a_bad_spec_json_or_no_target_is_one_line(tmp_path, capsys):
    where = ["--results", str(tmp_path / "r")]
    (tmp_path / "spec.json").write_text('{"architecture": "nope", "training": {}}')
    cases = [
        ([str(tmp_path / "spec.json")], "spec.json: architecture 'nope' is not registered"),
        ([str(tmp_path / "gone" / "spec.json")], "spec.json: no such spec.json"),
        ([], "harness run: name what to train"),
    ]
    for targets, needle in cases:
        assert main(["run", *targets, *where]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


def test_a_run_from_the_example_config_reruns_exactly_from_its_spec_json(make_kaggle, tmp_path, capsys):
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    where = ["--data", str(data), "--results", str(results), "--no-progress"]
    # The example's settings with the tiny cnn, a sample the tiny folder holds and one epoch: flags win.
    argv = ["run", "cnn", "--config", str(EXAMPLES / "run.toml"), "--sample", "40", "--epochs", "1", *where]
    assert main(argv) == 0, capsys.readouterr().err
    (first,) = RunStore(default_storage(results)).runs()
    assert first.status == "complete" and first.spec["training"]["lr_schedule"] == "cosine"
    assert first.spec["training"]["augment"]["hed"] == 0.05 and first.spec["data"]["seed"] == 7
    spec_json = results / "runs" / first.run_id / "spec.json"

    # A flag given to a spec.json rerun changes it; nothing else does.
    (changed,) = harness.plan(str(spec_json), tta=2)
    assert changed.training.tta == 2 and changed.data == harness.plan(str(spec_json))[0].data

    assert main(["run", str(spec_json), *where]) == 0, capsys.readouterr().err
    again = next(r for r in RunStore(default_storage(results)).runs() if r.run_id != first.run_id)
    assert again.status == "complete" and again.origin == f"rerun:{spec_json}"
    strip = lambda spec: {k: v for k, v in spec.items() if k != "origin"}  # noqa: E731
    assert strip(again.spec) == strip(first.spec)
    assert again.n_train == first.n_train and again.val_auc == pytest.approx(first.val_auc, abs=1e-6)
