"""Config files: `--config FILE` (TOML or YAML) holds a command's flags as keys; a run's spec.json reruns it."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, HarnessError
from harness.input_files import MB, read_input

if TYPE_CHECKING:
    from harness.config import RunSpec

FORMATS = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}
# Options a file may not set: the file itself, and what only the person at the command line decides.
NOT_IN_FILES = {"help", "config", "debug"}


# --- reading a file -------------------------------------------------------------------------------------------------


def read(path: str | Path) -> dict[str, Any]:
    """The file's top-level table, or a one-line error naming the file."""
    path = Path(path).expanduser()
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        hint = " (a run's spec.json is a target: harness run path/to/spec.json)" if path.suffix == ".json" else ""
        raise ConfigError(f"{path}: a config file is .toml, .yaml or .yml{hint}")
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = read_input(path, "config file", limit=MB).decode("utf-8")
    except HarnessError as exc:
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    try:
        raw = _parse_toml(text) if kind == "TOML" else _parse_yaml(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid {kind}: {' '.join(str(exc).split())}") from None
    if raw is None:  # an empty YAML file: no settings
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected `key = value` settings at the top level, got a {type(raw).__name__}")
    return raw


def _parse_toml(text: str) -> Any:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # Python 3.10: tomli, the same parser (a dependency there)
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ModuleNotFoundError:
            raise ConfigError("a TOML config file needs Python 3.11+ or `pip install tomli`") from None
    return tomllib.loads(text)  # TOMLDecodeError is a ValueError


def _parse_yaml(text: str) -> Any:
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs

    try:
        return yaml.safe_load(text)  # safe_load: a config file builds no Python objects
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


# --- a file as a command's flags ------------------------------------------------------------------------------------


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The keys a config file for this command may hold: each option's destination (the settings field's name:
    lr_schedule, time_limit, targets) and its long flag without the dashes, by name with underscores."""
    names: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in NOT_IN_FILES or action.dest == argparse.SUPPRESS:
            continue
        names[action.dest] = action
        for flag in action.option_strings:
            negative = isinstance(action, argparse.BooleanOptionalAction) and flag.startswith("--no-")
            if flag.startswith("--") and not negative:
                names.setdefault(flag[2:].replace("-", "_"), action)
    return names


def load(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's settings as the command's parsed values, by destination; a key or value the flags would refuse
    is a one-line error that names the key and the file (and, for a key, the nearest valid one)."""
    from harness.settings import check_names

    allowed = options(parser)
    values: dict[str, Any] = {}
    for key, value in read(path).items():
        name = str(key).replace("-", "_")  # lr-schedule reads as the flag, lr_schedule as the field
        if isinstance(value, dict):
            raise ConfigError(f"{path}: [{key}] is a table; settings are flat keys, e.g. epochs = 3 (see examples/)")
        try:
            check_names({name: value}, sorted(allowed), what="key")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        action = allowed[name]
        if action.dest in values:
            raise ConfigError(f"{path}: {key!r} is set twice (as {action.dest!r} too)")
        values[action.dest] = _value(path, key, value, action)
    return values


def _value(path: str | Path, key: str, value: Any, action: argparse.Action) -> Any:
    """A file's value as argparse would parse the flag: same type, same checks, same units (--time-limit minutes)."""

    def bad(detail: str) -> ConfigError:
        return ConfigError(f"{path}: {key} = {json.dumps(value, default=str)}: {detail}")

    if action.nargs == 0:  # an on/off flag (--dihedral, --no-progress): the key is its destination's value
        if not isinstance(value, bool):
            raise bad("expected true or false")
        return value
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not items:
            raise bad("expected at least one value")
        return [_one(item, action, bad) for item in items]
    if isinstance(value, list):
        raise bad("expected one value, not a list")
    if action.nargs == "?" and value is True:  # e.g. `--tensorboard` with no DIR
        return action.const
    return _one(value, action, bad)


def _one(value: Any, action: argparse.Action, bad: Any) -> Any:
    if isinstance(value, bool | dict | list):
        raise bad("expected a value, not true/false" if isinstance(value, bool) else "expected one value")
    kind = action.type
    if kind is None:
        if not isinstance(value, str):
            raise bad("expected a string (in quotes)")
        result: Any = value
    else:
        try:
            result = kind(str(value)) if callable(kind) else value
        except argparse.ArgumentTypeError as exc:
            raise bad(str(exc)) from None
        except (TypeError, ValueError):
            raise bad(f"expected {getattr(kind, '__name__', 'a valid value')}") from None
    if action.choices is not None and result not in action.choices:
        raise bad(f"expected one of {', '.join(map(str, action.choices))}")
    return result


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]  # type: ignore[no-any-return]


def apply(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]) -> argparse.Namespace:
    """`args` with `--config FILE`'s settings under the command line: the file's values become the command's
    defaults and the command line is parsed again, so a flag given there wins."""
    path = getattr(args, "config", None)
    if not path:
        return args
    command = command_parser(parser, args.command)
    values = load(path, command)
    command.set_defaults(**values)
    again = parser.parse_args(list(argv))
    # The settings still from the file, by their flag: a later error naming the flag names the file too.
    flags = {dest: _flag(command, dest) for dest, value in values.items() if getattr(again, dest, None) == value}
    again.config_flags = {flag: dest for dest, flag in flags.items() if flag}
    return again


def _flag(parser: argparse.ArgumentParser, dest: str) -> str | None:
    for action in parser._actions:
        if action.dest == dest:
            return next((s for s in action.option_strings if s.startswith("--")), None)
    return None


def locate(message: str, args: argparse.Namespace) -> str:
    """An error that names a flag the config file set (e.g. '--brightness must be in [0, 1)') names the key and
    the file as well."""
    for flag, dest in getattr(args, "config_flags", {}).items():
        if re.search(re.escape(flag) + r"(?![\w-])", message):
            return f"{message} ({dest} in {args.config})"
    return message


# --- a run's spec.json ----------------------------------------------------------------------------------------------


def is_spec_file(target: str) -> bool:
    """A `harness run` target that names a run's spec.json (no architecture or run id ends in .json)."""
    return target.lower().endswith(".json")


def read_spec(target: str) -> RunSpec:
    """The RunSpec a run's spec.json (in its run folder) records, or a one-line error naming the file."""
    from harness.config import RunSpec
    from harness.registry import ARCHITECTURES

    path = Path(target).expanduser()
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"{path}: no such spec.json")
    try:
        raw = json.loads(read_input(path, "spec.json", limit=MB).decode("utf-8"))
    except HarnessError as exc:
        raise ConfigError(str(exc)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable spec.json: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("architecture"), str):
        raise ConfigError(f"{path}: not a run's spec.json (no architecture)")
    if raw["architecture"] not in ARCHITECTURES:
        raise ConfigError(f"{path}: architecture {raw['architecture']!r} is not registered (see harness list)")
    try:
        return RunSpec.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a run's spec.json: {' '.join(str(exc).split())}") from None
