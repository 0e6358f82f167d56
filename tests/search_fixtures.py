"""Search test helpers: tiny spaces that train in a second, forced failures and a workspace over a tiny folder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras
from rich.console import Console

from harness.config import OptimizerConfig
from harness.registry import ARCHITECTURES, SEARCH_SPACES
from harness.tuning.search import SearchOptions
from harness.tuning.space import InvalidConfiguration, Sample, Suggest
from harness.workspace import Workspace

TINY_ARCH = {"convs": [1], "dense": [8]}


def tiny(s: Suggest) -> Sample:
    """A one-conv CNN with 2 to 4 filters: fast enough for many trials in a test."""
    width = s.suggest_int("width", 2, 4)
    learning_rate = s.suggest_float("learning_rate", 1e-3, 1e-2, log=True)
    return Sample("cnn", {**TINY_ARCH, "widths": [width]}, OptimizerConfig("adam", learning_rate), batch_size=8)


def tiny_invalid(s: Suggest) -> Sample:
    """Every point is an invalid combination: never built, recorded as pruned."""
    s.suggest_int("width", 2, 4)
    raise InvalidConfiguration("this test space has no valid point")


def tiny_failing(s: Suggest) -> Sample:
    """Every point trains to a NaN loss, so every run fails."""
    s.suggest_float("learning_rate", 1e-3, 1e-2, log=True)
    return Sample("nan_cnn", {}, OptimizerConfig("adam", 1e-3), batch_size=8)


def nan_cnn(input_shape: tuple[int, int, int] = (96, 96, 3)) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Rescaling(scale=float("nan")),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def register() -> None:
    """Add the tiny spaces and the NaN architecture (idempotent; tests restore the registries afterwards)."""
    ARCHITECTURES.register("nan_cnn", baseline=False, test=True)(nan_cnn)
    for space in (tiny, tiny_invalid, tiny_failing):
        SEARCH_SPACES.register(space.__name__, widens="cnn", test=True)(space)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The tiny spaces for the duration of a test; both registries are restored afterwards."""
    with ARCHITECTURES.override(), SEARCH_SPACES.override():
        register()
        yield


def options(**overrides: object) -> SearchOptions:
    """Three one-epoch trials of the tiny space on a stratified split: a few seconds each."""
    values: dict[str, object] = {"trials": 3, "space": "tiny", "epochs": 1, "protocol": "stratified", "seed": 1}
    return SearchOptions(**{**values, "progress": False, **overrides})


def workspace(data: Path, results: Path) -> Workspace:
    return Workspace(data=data, results=results, console=Console(quiet=True))
