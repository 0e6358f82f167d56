"""Settings metadata: each settings field states its flag and help once; flags, hints and checks derive from it."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterator
from numbers import Integral, Real
from typing import Any

from harness.errors import ConfigError


def knob(
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    choices: tuple[Any, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    cli: bool = True,
    study: str | None = None,
    budget: bool = False,
    absent: Any = None,
    preset: dict[str, Any] | None = None,
    const: Any = None,
    nargs: str | None = None,
) -> dict[str, Any]:
    """The metadata of one settings field: `dataclasses.field(default=..., metadata=knob("help text"))`.

    flag: the command-line flag (default: `--` + the field name with dashes); parse: the argparse type;
    cli=False: a setting only the library or a config file sets. study: why a search does not fix this setting
    for all its trials (None: a study keeps it for life, so trials stay comparable). budget: part of the key that
    says which runs are comparable (training.budget); absent: its value in a record written before it existed.
    preset: for a nested settings field, what its own on/off flag turns on (e.g. --augment).
    const: the value of the flag given without one (e.g. `--tensorboard` alone; its value is optional).
    nargs: argparse's, for a flag that takes several values (`--models a b`; the field holds a tuple).
    """
    return {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "choices": choices,
        "parse": parse,
        "cli": cli,
        "study": study,
        "budget": budget,
        "absent": absent,
        "preset": preset,
        "const": const,
        "nargs": nargs,
    }


# --- argparse types: a bad value is argparse's one-line error naming the flag -------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):  # float() reads "nan" and "inf": neither is a budget, a rate or a size
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


# A duration on the command line or in a config file: minutes, as every time flag always took, or a number with a
# unit. The library takes and stores seconds (Optuna's `timeout`, AutoGluon's `time_limit`): this is the one place
# where the two meet.
DURATION_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
DURATION_HELP = "minutes, or with a unit: 90s, 15m, 1h"


def duration(text: str) -> float:
    """A positive duration in seconds, from minutes ('15', '1.5') or a number with a unit ('90s', '15m', '1h')."""
    raw = str(text).strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :] or "m"
    if unit not in DURATION_UNITS:
        raise argparse.ArgumentTypeError(f"expected minutes or a duration such as 90s, 15m or 1h, got {text!r}")
    try:
        return positive_float(number.strip()) * DURATION_UNITS[unit]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected minutes or a duration such as 90s, 15m or 1h, got {text!r}"
        ) from None


minutes = duration  # the earlier name of the same parser


def check_seconds(value: object, name: str) -> float | None:
    """A library duration (seconds): None, or a finite positive number; else a one-line error naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} is a duration in seconds and must be a finite positive number, got {value!r}")
    return float(value)


def numbers(kind: type, allow_none: bool = False) -> Callable[[str], tuple[Any, ...]]:
    """A comma-separated list of positive numbers, e.g. `--multipliers 0.5,1,2` (or 'none': no values)."""

    def parse(text: str) -> tuple[Any, ...]:
        if allow_none and text.strip().lower() == "none":
            return ()
        try:
            values = tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values

    return parse


SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's random_state take 0 .. 2**32 - 1


def check_seed(seed: int) -> int:
    """A seed every library accepts, or a one-line error naming --seed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be a whole number from 0 to {SEED_MAX:,}, got {seed!r}")
    return seed


def seed_number(text: str) -> int:
    try:
        return check_seed(int(text))
    except (ValueError, ConfigError) as exc:
        detail = str(exc) if isinstance(exc, ConfigError) else f"expected a whole number, got {text!r}"
        raise argparse.ArgumentTypeError(detail.removeprefix("--seed must be ")) from None


# --- the fields of a settings class -------------------------------------------------------------------------------


def knobs(cls: type) -> Iterator[dataclasses.Field[Any]]:
    """The fields of a settings dataclass that carry knob metadata, in order."""
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            yield f


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def base_type(cls: type, f: dataclasses.Field[Any]) -> Any:
    """A field's type without `| None`."""
    hint = _hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    return hint


def nested(cls: type, f: dataclasses.Field[Any]) -> type | None:
    """The settings class of a nested field whose own fields have knobs (e.g. TrainingConfig.augment), else None."""
    kind = base_type(cls, f)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind) and any(True for _ in knobs(kind)):
        return kind
    return None


def flag_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def flags_of(cls: type, f: dataclasses.Field[Any]) -> str:
    """A field's flag, with its nested fields' flags: e.g. '--augment/--dihedral/--brightness/...'."""
    inner = nested(cls, f)
    names = [flag_of(f)] if f.metadata.get("preset") or inner is None else []
    names += [flag_of(g) for g in knobs(inner) if g.metadata["cli"]] if inner else []
    return "/".join(names)


def flat_names(cls: type, *, study: bool = False) -> list[str]:
    """The names a flat mapping (flags, keyword arguments, a stored study) may use for a settings class: each knob
    field's name and, for a nested one, its own fields' names too. study=True: only the settings a study fixes."""
    names: list[str] = []
    for f in knobs(cls):
        if study and f.metadata["study"] is not None:
            continue
        names.append(f.name)
        inner = nested(cls, f)
        if inner is not None and not study:
            names += flat_names(inner)
    return names


def check_names(values: dict[str, Any], allowed: list[str], what: str = "setting") -> None:
    """An unknown keyword is a one-line error that names it and the nearest valid one."""
    for name in values:
        if name not in allowed:
            near = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(allowed)}"
            raise ConfigError(f"unknown {what} {name!r}{hint}")


def build(base: Any, values: dict[str, Any]) -> Any:
    """`base` (a settings dataclass) with the flat `values` applied; a nested field takes a config, a dict of its
    fields, or True for its preset (e.g. augment=True), and then its own fields' values on top."""
    cls = type(base)
    changes: dict[str, Any] = {}
    for f in knobs(cls):
        inner = nested(cls, f)
        if inner is None:
            if f.name in values:
                changes[f.name] = values[f.name]
            continue
        own, current = values.get(f.name), getattr(base, f.name)
        if own is True:
            current = inner(**(f.metadata.get("preset") or {}))
        elif isinstance(own, dict):
            current = inner(**own)
        elif isinstance(own, inner):
            current = own
        elif own not in (None, False):
            raise ConfigError(f"{f.name} must be a {inner.__name__}, a dict of its fields or True, got {own!r}")
        sub = {g.name: values[g.name] for g in knobs(inner) if g.name in values}
        changes[f.name] = dataclasses.replace(current, **sub) if sub else current
    return dataclasses.replace(base, **changes)


def flat(config: Any, *, study: bool = False) -> dict[str, Any]:
    """A settings object as a flat mapping of its knob fields (nested ones as dicts): what a study stores."""
    cls = type(config)
    out: dict[str, Any] = {}
    for f in knobs(cls):
        if study and f.metadata["study"] is not None:
            continue
        value = getattr(config, f.name)
        is_config = dataclasses.is_dataclass(value) and not isinstance(value, type)
        out[f.name] = dataclasses.asdict(value) if is_config else value  # type: ignore[arg-type]
    return out


# --- argparse ------------------------------------------------------------------------------------------------------


def add_flags(parser: Any, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per knob field of `cls` (and of its nested settings classes), default None: a flag left out leaves
    the setting to the library (a registered architecture's default, a stored study's value, the class default)."""
    for f in knobs(cls):
        meta = f.metadata
        if not meta["cli"] or f.name in skip:
            continue
        inner = nested(cls, f)
        if inner is not None:
            if meta.get("preset"):
                parser.add_argument(flag_of(f), dest=f.name, action="store_true", default=None, help=meta["help"])
            add_flags(parser, inner, skip=skip)
            continue
        kind = base_type(cls, f)
        options: dict[str, Any] = {"dest": f.name, "default": None, "help": meta["help"]}
        if kind is bool:
            options["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
        else:
            options["type"] = meta["parse"] or kind
            for key in ("metavar", "choices"):
                if meta[key] is not None:
                    options[key] = meta[key]
            if meta.get("const") is not None:
                options |= {"nargs": "?", "const": meta["const"]}
            if meta.get("nargs") is not None:
                options |= {"nargs": meta["nargs"], "type": meta["parse"] or str}
        parser.add_argument(flag_of(f), **options)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of `cls`'s knobs that were given on the command line, by field name (several values as a tuple)."""
    values = {name: getattr(args, name) for name in flat_names(cls) if getattr(args, name, None) is not None}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def from_args(args: argparse.Namespace, cls: type, base: Any = None) -> Any:
    """A settings object: `base` (default: the class's defaults) with the flags that were given applied."""
    return build(base if base is not None else cls(), given(args, cls))


# --- types: a value from a config file, a spec.json or a keyword argument is checked as strictly as a flag ------


def _type_name(kind: Any) -> str:
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false"}.get(kind, str(kind))


def check_types(config: Any) -> None:
    """Each field of a settings dataclass holds a value of its declared type, or a one-line error naming its flag:
    a whole number where one is declared (not 3.5, not true), a finite number for a float, text for a string."""
    cls = type(config)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        hint = hints[f.name]
        optional = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        kinds = [a for a in typing.get_args(hint) if a is not type(None)] if optional else [hint]
        if value is None and optional:
            continue
        kind = kinds[0] if len(kinds) == 1 else None
        name = flag_of(f) if f.metadata.get("help") else f.name
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, Integral)):
            raise ConfigError(f"{name} must be {_type_name(int)}, got {value!r}")
        real = isinstance(value, Real) and not isinstance(value, bool)
        if kind is float and not (real and math.isfinite(value)):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"{name} must be {_type_name(str)}, got {value!r}")


def check_keys(values: dict[str, Any], cls: type, where: str) -> None:
    """A stored or hand-written mapping for a settings class names only its fields (the nearest one suggested)."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    for name in values:
        if name not in allowed:
            near = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{where}: unknown key {name!r}{hint}")


def same_as(cls: type, name: str, **changes: Any) -> dict[str, Any]:
    """The knob metadata of `cls`'s field `name`, with `changes` (another flag, fewer choices, a default said in the
    help): a setting that another options class offers too is declared once, where it lives."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return {**f.metadata, **changes}
    raise KeyError(f"{cls.__name__} has no setting {name!r}")
