"""One settings type per concept: flags, study checks, the resume hint and the budget key derive from the fields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from harness.config import AugmentConfig, DataConfig, TrainingConfig
from harness.errors import ConfigError, HarnessError
from harness.settings import add_flags, build, flags_of, from_args, knob, knobs, positive_int
from harness.training.budget import BUDGET_NAMES, budget_of, budget_text
from harness.tuning.study_settings import StudySettings, reconcile

pytestmark = pytest.mark.backend_free


@dataclass(frozen=True)
class Inner:
    jitter: float = field(default=0.0, metadata=knob("jitter up to F", metavar="F"))
    flip: bool = field(default=False, metadata=knob("random flips"))


@dataclass(frozen=True)
class Recipe:
    """A settings class a new knob is added to: each field is one flag, nothing else to edit."""

    steps: int = field(default=10, metadata=knob("steps", parse=positive_int))
    mode: str = field(default="a", metadata=knob("mode", choices=("a", "b")))
    inner: Inner = field(default_factory=Inner, metadata=knob("preset", flag="--shake", preset={"flip": True}))
    hidden: int = field(default=3, metadata=knob("library only", cli=False))


def test_each_knob_field_is_one_flag_and_only_given_flags_change_the_base():
    parser = argparse.ArgumentParser()
    add_flags(parser, Recipe)
    flags = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags == {"--steps", "--mode", "--shake", "--jitter", "--flip"}  # --hidden: cli=False
    base = Recipe(steps=7, inner=Inner(jitter=0.5))
    assert from_args(parser.parse_args([]), Recipe, base) == base  # nothing given: the base's own values
    args = parser.parse_args(["--mode", "b", "--shake", "--jitter", "0.2"])
    assert from_args(args, Recipe, base) == Recipe(steps=7, mode="b", inner=Inner(jitter=0.2, flip=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "0"])
    assert flags_of(Recipe, knobs_by_name(Recipe)["inner"]) == "--shake/--jitter/--flip"


def knobs_by_name(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in knobs(cls)}


def test_every_training_and_data_knob_is_a_flag_of_run_and_search():
    from harness.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("run", "search"):
        flags = {s for a in sub.choices[command]._actions for s in a.option_strings}
        for cls in (TrainingConfig, DataConfig, AugmentConfig):
            for f in knobs(cls):
                if f.metadata["cli"] and not dataclasses.is_dataclass(f.type):
                    wanted = f.metadata["flag"] or "--" + f.name.replace("_", "-")
                    assert wanted in flags, (command, wanted)


def test_an_unknown_setting_names_the_nearest_one():
    with pytest.raises(ConfigError, match="unknown setting 'epoch'; did you mean 'epochs'"):
        StudySettings.from_dict({"epoch": 3})
    with pytest.raises(HarnessError, match="--time-limit does not apply to search: every trial trains for --epochs"):
        StudySettings.from_dict({"time_limit": 60})


def test_a_resumed_study_keeps_its_settings_and_names_the_flag_of_a_nested_one():
    stored = StudySettings.from_dict({"space": "tiny", "epochs": 2, "dihedral": True}).as_dict()
    resumed = reconcile("s", {"space": "tiny"}, stored)  # unset settings take the study's values
    assert resumed.epochs == 2 and resumed.training.augment == AugmentConfig(dihedral=True)
    with pytest.raises(HarnessError, match=r"study 's' was started with --augment/--dihedral/--brightness/"):
        reconcile("s", {"space": "tiny", "hue": 0.1}, stored)
    older = {k: v for k, v in stored.items() if k not in ("precision", "label_smoothing")}  # before a knob existed
    assert reconcile("s", {"precision": "mixed_bfloat16"}, older).precision == "mixed_bfloat16"


def test_the_budget_key_is_the_budget_fields_and_old_records_read_as_trained_without_new_knobs():
    names = {"dataset", "protocol", "sample", "seed", "folds", "epochs", "augment", "tta", "precise_bn"}
    assert names <= set(BUDGET_NAMES) and "batch_size" not in BUDGET_NAMES  # the search varies the batch size
    spec = {"data": dataclasses.asdict(DataConfig()), "training": dataclasses.asdict(TrainingConfig(epochs=3))}
    old = {"data": {"protocol": "seed", "sample": None, "seed": 101}, "training": {"epochs": 3}}
    assert dict(zip(BUDGET_NAMES, budget_of("d", old), strict=True))["precise_bn"] == 0  # absent: off
    assert budget_of("d", spec) != budget_of("d", old)  # precise BN 20 against none
    assert budget_text(budget_of("d", spec)).startswith("3 epochs, protocol seed, sample all, split seed 101")
    augmented = build(TrainingConfig(epochs=3), {"augment": True})
    key = budget_of("d", {**spec, "training": dataclasses.asdict(augmented)})
    assert "augment brightness=0.1 contrast=0.1 dihedral=True hue=0.02" in budget_text(key)


def test_the_resume_hint_names_only_the_flags_that_take_baselines_to_the_study_budget():
    from harness.tuning.search import baselines_flags

    settings = StudySettings.from_dict({"epochs": 3, "sample": 400, "dihedral": True, "batch_size": 8})
    assert baselines_flags(settings) == "--epochs 3 --dihedral --sample 400"
