"""The `harness` command: each subcommand parses its flags, makes one library call and prints the result."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ start-up chatter (cuInit...) quiet

from rich.console import Console

from harness.errors import HarnessError, one_line

EXAMPLES = """\
examples:
  harness run baselines                            # the seed's three CNNs on the built-in demo data (demo budget)
  harness run baselines --data ~/kaggle/histopathologic-cancer-detection --sample 20000 --epochs 3
  harness search --trials 50 --sample 4000 --epochs 3
  harness search --space modern --trials 30 --epochs 3 --timeout 60   # ResNets, recipes, stain jitter
  harness run --config examples/run.toml --epochs 1                  # settings from a file; a flag wins
  harness search --trials 50 --workers 4 --storage postgresql://user@db/harness   # one study, many processes
  harness predict results/runs/<run_id>/model.keras --tta 8 --out submission.csv
  harness leaderboard --by val_auc --format markdown
  harness scale --data kaggle --sample 20000 --epochs 2,6 --compute-epochs 2   # does a bigger network do better?
  harness bench --data kaggle --sample 20000        # seed notebook vs harness, images/s per stage
"""


COMMANDS = (
    "list",
    "data",
    "run",
    "search",
    "predict",
    "export",
    "leaderboard",
    "ensemble",
    "clean",
    "scale",
    "report",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    """The `harness` parser: each command module (harness.cli.<command>_command) adds its own subparser and handler."""
    import importlib

    from harness.cli import flags

    parser = argparse.ArgumentParser(
        prog="harness",
        description="Train, search and rank CNNs for Kaggle's Histopathologic Cancer Detection (PatchCamelyon).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flags.debug(parser, default=bool(os.environ.get("HARNESS_DEBUG")))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        importlib.import_module(f"harness.cli.{command}_command").add(sub)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line's flags, over those of its --config file where one is given."""
    from harness.config_files import apply

    parser = build_parser()
    return apply(parser, parser.parse_args(argv), argv)


def __getattr__(name: str) -> Callable[..., int]:
    """`harness.cli.cmd_list` and the like: each command's handler, from its own module."""
    command = name.removeprefix("cmd_").split("_")[0]
    if name.startswith("cmd_") and command in COMMANDS:
        import importlib

        return getattr(importlib.import_module(f"harness.cli.{command}_command"), name)  # type: ignore[no-any-return]
    raise AttributeError(f"module 'harness.cli' has no attribute {name!r}")


def _closed(stream: object) -> bool:
    return stream is None or bool(getattr(stream, "closed", False))


def main(argv: Sequence[str] | None = None) -> int:
    from harness.terminal.consoles import make_consoles

    if _closed(sys.stdout) or _closed(sys.stderr):
        # Started with a standard stream closed (`harness list >&-`): say so where possible, and do no work whose
        # results or errors would go nowhere.
        which = "stdout" if _closed(sys.stdout) else "stderr"
        if not _closed(sys.stderr):
            sys.stderr.write(f"error: {which} is closed: the command's output would be lost; run it with {which}"
                             " open (for example redirected to a file)\n")  # fmt: skip
        return 2
    out, err = make_consoles()  # off a terminal (a log, CI, a notebook) lines are never hard-wrapped
    # The command line, for the crash log. (Not `list(...)`: the `list` command's module shadows it here.)
    line = [*(sys.argv[1:] if argv is None else argv)]
    try:
        args = parse_args(line)
    except HarnessError as exc:  # a --config file's bad key or value
        _print_error(err, str(exc))
        return 2
    args.argv = line
    from harness.backend import quiet_start

    try:
        if getattr(args, "backend", True):  # importing the backend (TensorFlow) costs seconds; skip it when unused
            quiet_start()
        return int(args.handler(args, out, err))
    except HarnessError as exc:
        from harness.config_files import locate

        _print_error(err, locate(str(exc), args))
        return 2
    except KeyboardInterrupt:
        from harness.run_records import IN_PROGRESS

        if IN_PROGRESS:
            run, study = IN_PROGRESS[-1]
            how = (
                f"the same `harness search` command continues study {study}"
                if study
                else f"`harness run {run} --resume` goes on from its last completed epoch"
            )
            err.print(
                f"[yellow]interrupted[/yellow]: run {run} is marked interrupted; {how}; finished runs are stored",
                highlight=False,
            )
        else:
            err.print("[yellow]interrupted[/yellow]: finished runs are stored")
        return 130
    except BrokenPipeError:  # `harness leaderboard --format csv | head`: the reader left, nothing is wrong
        return 0
    except Exception as exc:  # the class guard: a bug or an unforeseen input is one line and a log, not a traceback
        if args.debug:
            raise
        log = _write_crash_log(args)
        where = f"the full traceback is in {log}" if log else "no log could be written"
        _print_error(err, f"harness {_command_name(args)} failed: {one_line(exc)} ({where}; --debug shows it)")
        return 1


def _command_name(args: argparse.Namespace) -> str:
    return " ".join(filter(None, (args.command, getattr(args, "data_command", None))))


def _print_error(err: Console, text: str) -> None:
    # One short line whatever the input held (a 10 MB id, a multi-line driver message).
    from rich.markup import escape

    message = " ".join(line.strip() for line in text.strip().splitlines())
    message = message if len(message) <= 1000 else f"{message[:1000]}... ({len(message):,} characters)"
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _write_crash_log(args: argparse.Namespace) -> str | None:
    """The traceback of an unexpected error, in <results>/logs/ (or the system's temp folder): never lost, never
    printed unasked."""
    import tempfile
    import time
    import traceback

    from harness.atomic import write_text
    from harness.workspace import ENV_RESULTS

    results = getattr(args, "results", None) or os.environ.get(ENV_RESULTS) or "results"
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = f"harness {' '.join(args.argv)}\n\n{traceback.format_exc()}"
    for folder in (os.path.join(results, "logs"), tempfile.gettempdir()):
        try:
            os.makedirs(folder, exist_ok=True)
            write_text(os.path.join(folder, name), text)
            return os.path.join(folder, name)
        except OSError:
            continue
    return None


if __name__ == "__main__":
    sys.exit(main())
