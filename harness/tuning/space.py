"""One search space, two tuners: the `Suggest` protocol spaces are written against, and its KerasTuner adapter."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.config import OPTIMIZERS, AugmentConfig, OptimizerConfig
from harness.errors import HarnessError

OPTIMIZER_CHOICES = tuple(OPTIMIZERS)  # in config order: a study samples the same choice list
LEARNING_RATE_RANGE = (1e-5, 1e-2)  # holds the seed's 1e-3 and 1e-4
SGD_MOMENTUM = 0.9


class Suggest(Protocol):
    """What a space asks of a tuner. An `optuna.Trial` satisfies it as it is; KerasTuner's `hp` needs the adapter."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


class InvalidConfiguration(Exception):
    """A sampled combination that must never be built (e.g. the feature map would shrink below 1x1)."""


class OverBudget(InvalidConfiguration):
    """A valid point whose forward pass costs more than --max-gmacs allows."""


@dataclass(frozen=True)
class Sample:
    """What a space returns: a model and optimiser, ready to become a RunSpec."""

    architecture: str
    arch_kwargs: dict[str, Any]
    optimizer: OptimizerConfig
    batch_size: int | None = None
    augment: AugmentConfig | None = None  # None: the study's own augmentation settings
    # Training-recipe fields the space chooses per trial (lr_schedule, weight_decay, ema, ...): TrainingConfig names.
    recipe: dict[str, Any] = field(default_factory=dict)
    # Values computed from the suggestions (effective convs, widths, parameter count), stored with the run.
    derived: dict[str, Any] = field(default_factory=dict)


SpaceFunction = Callable[[Suggest], Sample]


def with_compute_cap(space: SpaceFunction, max_gmacs: float | None) -> SpaceFunction:
    """`space`, refusing points whose forward pass costs more than `max_gmacs` billion MACs per image.

    For CPU budgets: a trial's time follows its compute, not its parameter count. The cost is the space's own
    derived['gmacs'] where it computes one, else the sampled architecture's cost function: every space is capped.
    """
    if max_gmacs is None:
        return space

    def capped(s: Suggest) -> Sample:
        from harness.cost import architecture_cost

        sample = space(s)
        cost = sample.derived.get("gmacs")
        if cost is None:
            cost = architecture_cost(sample.architecture, **sample.arch_kwargs).gmacs
        if cost > max_gmacs:
            raise OverBudget(f"{cost:.2f} GMACs per image exceed --max-gmacs {max_gmacs:g}")
        return sample

    return capped


def suggest_optimizer(s: Suggest) -> OptimizerConfig:
    """Optimiser by name with a log-uniform learning rate; SGD always gets momentum."""
    name = s.suggest_categorical("optimizer", OPTIMIZER_CHOICES)
    learning_rate = s.suggest_float("learning_rate", *LEARNING_RATE_RANGE, log=True)
    kwargs = {"momentum": SGD_MOMENTUM} if name == "sgd" else {}
    return OptimizerConfig(name, float(learning_rate), kwargs)


def _plain(choices: Sequence[Any]) -> bool:
    """KerasTuner's Choice keeps str, int and float values as they are (it turns bools into ints)."""
    kinds = {type(c) for c in choices}
    return len(kinds) == 1 and kinds <= {str, int, float}


class KerasTunerSuggest:
    """Maps the `Suggest` calls onto a KerasTuner `HyperParameters` object (hp.Int, hp.Float, hp.Choice)."""

    def __init__(self, hp: Any) -> None:
        self.hp = hp
        self.chosen: dict[str, Any] = {}  # name -> the value the space got (a bool, not KerasTuner's text)

    def _chose(self, name: str, value: Any) -> Any:
        self.chosen[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        sampling = "log" if log else "linear"
        return self._chose(name, int(self.hp.Int(name, low, high, step=None if log else step, sampling=sampling)))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return self._chose(name, float(self.hp.Float(name, low, high, step=step, sampling="log" if log else "linear")))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        choices = list(choices)
        if _plain(choices):
            return self._chose(name, self.hp.Choice(name, choices))
        # Bools, None or mixed types travel as their text and come back as the original objects.
        by_text = {str(c): c for c in choices}
        if len(by_text) != len(choices):
            raise ValueError(f"choices of {name!r} are not distinct as text: {choices}")
        return self._chose(name, by_text[self.hp.Choice(name, list(by_text))])


class FixedSuggest:
    """Replays given values (a stored trial, a seed model's point), checking each lies in the declared range."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self.used: set[str] = set()

    def _get(self, name: str) -> Any:
        if name not in self.values:
            raise HarnessError(f"no value for search parameter {name!r}; given: {', '.join(sorted(self.values))}")
        self.used.add(name)
        return self.values[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = self._get(name)
        if not (isinstance(value, int) and low <= value <= high and (log or (value - low) % step == 0)):
            raise HarnessError(f"search parameter {name}={value!r} is outside {low}..{high} (step {step})")
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value = float(self._get(name))
        on_grid = step is None or math.isclose((value - low) / step, round((value - low) / step), abs_tol=1e-6)
        if not (low - 1e-12 <= value <= high + 1e-12 and on_grid):
            raise HarnessError(f"search parameter {name}={value!r} is outside {low}..{high} (step {step})")
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = self._get(name)
        if value not in list(choices):
            raise HarnessError(f"search parameter {name}={value!r} is not one of {list(choices)}")
        return value


def first_point(name: str, space: SpaceFunction, values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A space's declared first trial, replayed through `space` (already capped by --max-gmacs): None when it declares
    none or the cap refuses it; an error naming the space when the point is incomplete, unused or out of range."""
    if values is None:
        return None
    fixed = FixedSuggest(values)
    try:
        space(fixed)
    except OverBudget:
        return None
    except InvalidConfiguration as exc:
        raise HarnessError(f"search space {name!r}: its first point is not valid: {exc}") from None
    except HarnessError as exc:
        raise HarnessError(f"search space {name!r}: its first point is not valid: {exc}") from None
    unused = sorted(set(values) - fixed.used)
    if unused:
        raise HarnessError(f"search space {name!r}: its first point names parameters it never asks for: {unused}")
    return dict(values)


def portfolio_points(
    name: str, space: SpaceFunction, changes: Sequence[Mapping[str, Any]] | None, first: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The space's portfolio as complete points: `first` with each entry's changes, each replayed through `space`
    (capped by --max-gmacs); a point the cap refuses is left out, one that is not valid is an error naming the
    space."""
    if not changes or first is None:
        return []
    points = []
    for change in changes:
        unknown = sorted(set(change) - set(first))
        if unknown:
            raise HarnessError(
                f"search space {name!r}: a portfolio point changes parameters it never asks for: {unknown}"
            )
        point = first_point(name, space, {**first, **change})
        if point is not None and point not in points and point != dict(first):
            points.append(point)
    return points


def keras_tuner_values(point: Mapping[str, Any], hp: Any) -> dict[str, Any]:
    """`point` as KerasTuner stores it: the text of a bool or mixed-type choice (see KerasTunerSuggest)."""
    declared = {h.name: h for h in hp.space}
    out = {}
    for name, value in point.items():
        choices = getattr(declared.get(name), "values", None)
        textual = choices is not None and all(isinstance(c, str) for c in choices)
        out[name] = str(value) if textual and not isinstance(value, str) else value
    return out


def declare(space: SpaceFunction, hp: Any) -> None:
    """Register every parameter of `space` in KerasTuner's `hp` (an invalid default combination is fine here)."""
    with contextlib.suppress(InvalidConfiguration):
        space(KerasTunerSuggest(hp))
