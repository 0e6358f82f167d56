"""Flags several commands share: --debug, --config, where to work, the settings flags (from their fields), ranking."""

from __future__ import annotations

import argparse
from typing import Any

from harness.settings import positive_float, positive_int, seed_number

__all__ = ["positive_float", "positive_int", "seed_number"]  # the argparse types, for the command modules

RANKINGS = ("val_accuracy", "val_auc", "holdout_auc")
RANKING_HELP = (
    "ranking metric (default val_accuracy, as the card asks, or $HARNESS_RANK_BY once set, e.g. to val_auc,"
    " Kaggle's metric; ties are broken by the other metric, val_auc)"
)


def debug(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    # Before or after the command: a subcommand's SUPPRESS default keeps the top-level value when not given.
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="print the full traceback of an unexpected error (default: one line, and the traceback in"
        " <results>/logs/; also HARNESS_DEBUG=1)",
    )


def where(parser: argparse.ArgumentParser) -> None:
    """--debug and the three flags every command that touches the store takes."""
    debug(parser)
    group = parser.add_argument_group("where")
    group.add_argument(
        "--data", metavar="DIR", help="Kaggle-layout folder (train_labels.csv, train/, test/); default: built-in demo"
    )
    group.add_argument("--results", metavar="DIR", help="where runs, caches and submissions go (default: ./results)")
    group.add_argument(
        "--storage",
        metavar="URL",
        help="run store, e.g. postgresql://host/db (default: sqlite:///<results>/harness.db)",
    )


def settings(parser: argparse.ArgumentParser) -> None:
    """One flag per training and data setting, derived from TrainingConfig's and DataConfig's fields."""
    from harness.config import DataConfig, TrainingConfig
    from harness.settings import add_flags

    add_flags(parser.add_argument_group("training (default: each model's own)"), TrainingConfig)
    add_flags(parser.add_argument_group("data protocol"), DataConfig)
    no_progress(parser)


def config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="read this command's flags from a TOML or YAML file (keys: the flags' names, e.g. lr_schedule ="
        ' "cosine"; see examples/); a flag given on the command line wins',
    )


def no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training and data flags that were given, by field name: the settings keywords of harness.api."""
    from harness.config import DataConfig, TrainingConfig
    from harness.settings import given

    return {**given(args, TrainingConfig), **given(args, DataConfig)}


def workspace(args: argparse.Namespace, console: Any) -> Any:
    from harness.workspace import Workspace

    return Workspace.from_flags(args.data, args.results, args.storage, console)
