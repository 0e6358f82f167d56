"""`harness scale`'s settings are one dataclass: its flags, the library's keywords and their checks derive from it."""

from __future__ import annotations

import dataclasses

import pytest

import harness
from harness.cli import parse_args
from harness.errors import ConfigError, HarnessError
from harness.scaling.study import ScaleOptions
from harness.settings import build, flag_of, from_args, knobs


@pytest.mark.backend_free
def test_every_scale_setting_is_a_flag_and_the_flags_build_the_options():
    argv = ["scale", "--multipliers", "0.5,1,3", "--seed", "7", "--epochs", "none", "--compute-epochs", "2"]
    argv += ["--axis", "depth", "--max-points", "4", "--seeds", "2"]
    args = parse_args(argv)
    options = from_args(args, ScaleOptions)
    assert options == ScaleOptions(
        axis="depth", multipliers=(0.5, 1.0, 3.0), seeds=2, epochs=(), compute_epochs=2.0, split_seed=7, max_points=4
    )
    assert "--seed" in {flag_of(f) for f in knobs(ScaleOptions)}
    assert {f.name for f in knobs(ScaleOptions)} == {f.name for f in dataclasses.fields(ScaleOptions)}
    # A flag left out keeps the dataclass's default: the CLI and the library share one set of defaults.
    assert from_args(parse_args(["scale"]), ScaleOptions) == ScaleOptions()


@pytest.mark.backend_free
def test_scale_keywords_are_checked_by_name_and_by_value(tmp_path):
    with pytest.raises(ConfigError, match=r"scale setting 'multiplers'.*did you mean 'multipliers'"):
        harness.scale(multiplers=(1, 2), results=tmp_path)  # refused before anything is opened or trained
    assert not any(tmp_path.iterdir())
    assert build(ScaleOptions(), {"multipliers": (1.0, 2.0), "seeds": 4}).seeds == 4
    with pytest.raises(HarnessError, match="--multipliers must include 1"):
        build(ScaleOptions(), {"multipliers": (0.5, 2.0)})
    with pytest.raises(SystemExit):  # argparse's one-line error for a bad list
        parse_args(["scale", "--multipliers", "1,zero"])
