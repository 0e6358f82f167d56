"""The `harness` command: each subcommand parses its flags, makes one library call and prints the result."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ start-up chatter (cuInit...) quiet

from rich.console import Console

from harness.config import PRECISIONS
from harness.errors import HarnessError, one_line

EXAMPLES = """\
examples:
  harness run baselines                            # the seed's three CNNs on the built-in demo data (demo budget)
  harness run baselines --data ~/kaggle/histopathologic-cancer-detection --sample 20000 --epochs 3
  harness search --trials 50 --sample 4000 --epochs 3
  harness search --trials 50 --workers 4 --storage postgresql://user@db/harness   # one study, many processes
  harness predict results/runs/<run_id>/model.keras --tta 8 --out submission.csv
  harness leaderboard --by val_auc --format markdown
  harness scale --data kaggle --sample 20000 --epochs 2,6 --compute-epochs 2   # does a bigger network do better?
  harness bench --data kaggle --sample 20000        # seed notebook vs harness, images/s per stage
"""


def _debug(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    # Before or after the command: a subcommand's SUPPRESS default keeps the top-level value when not given.
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="print the full traceback of an unexpected error (default: one line, and the traceback in"
        " <results>/logs/; also HARNESS_DEBUG=1)",
    )


PREDICT_DESCRIPTION = """\
Predict the test set with a saved .keras model and write a validated submission (id,label).
The model must output one probability per image: shape (N, 1) or (N,). A (N, 2) output is
read as a two-class softmax [p(class 0), p(class 1)] and column 1 is used (its rows must sum
to 1). Any other output (more columns, several outputs, a per-pixel map) is refused.
Without --data, the test set is that of the data folder the model's run was trained on
(MODEL must then be a run's model.keras known to the store); any other model needs --data.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    _debug(parser)
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _seed(text: str) -> int:
    from harness.config import check_seed
    from harness.errors import ConfigError

    try:
        return check_seed(int(text))
    except (ValueError, ConfigError) as exc:
        detail = str(exc) if isinstance(exc, ConfigError) else f"expected a whole number, got {text!r}"
        raise argparse.ArgumentTypeError(detail.removeprefix("--seed must be ")) from None


def _numbers(kind: type, allow_none: bool = False) -> Callable[[str], tuple]:
    """A comma-separated list of positive numbers, e.g. `--multipliers 0.5,1,2` (or 'none': no values)."""

    def parse(text: str) -> tuple:
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


def _budget(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("budget and data protocol")
    group.add_argument("--epochs", type=_positive_int, help="epochs per model (default: each model's own)")
    group.add_argument("--sample", type=_positive_int, metavar="N", help="use a stratified subset of N labelled images")
    group.add_argument("--protocol", choices=("seed", "stratified"), default="seed", help="split (default: seed)")
    group.add_argument(
        "--seed", type=_seed, default=101, help="random seed for the sample, split and weights (0 to 4294967295)"
    )
    group.add_argument("--batch-size", type=_positive_int, help="training batch size (default: each model's own, 50)")
    group.add_argument(
        "--time-limit", type=_positive_float, metavar="MINUTES", help="stop a model's training after this long"
    )
    group.add_argument(
        "--precise-bn",
        type=int,
        metavar="B",
        help="recompute BatchNorm statistics from B training batches before each validation (0: off, as the notebook)",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="compute dtype: mixed = float16 (GPUs), mixed_bfloat16 (AVX512-BF16 CPUs, TPUs); output stays float32",
    )
    group.add_argument("--no-progress", action="store_true", help="no live progress display")
    tricks = parser.add_argument_group("augmentation and validation")
    tricks.add_argument(
        "--augment", action="store_true", help="shorthand: --dihedral --brightness .1 --contrast .1 --hue .02"
    )
    tricks.add_argument("--dihedral", action="store_true", help="random flips and 90-degree rotations in training")
    tricks.add_argument("--brightness", type=float, metavar="F", help="random brightness shift up to F (0..1)")
    tricks.add_argument("--contrast", type=float, metavar="F", help="random contrast change up to F (0..1)")
    tricks.add_argument("--hue", type=float, metavar="F", help="random hue rotation up to F of the colour circle")
    tricks.add_argument(
        "--crop", choices=("random", "centre"), help="crop to --crop-size: random (centre at test) or centre"
    )
    tricks.add_argument("--crop-size", type=_positive_int, default=72, metavar="PX", help="crop side (default 72)")
    tricks.add_argument(
        "--tta",
        type=int,
        choices=(1, 2, 4, 8),
        default=1,
        help="test-time augmentation: average over this many dihedral transforms (default 1: off)",
    )
    tricks.add_argument(
        "--folds",
        type=_positive_int,
        default=1,
        metavar="K",
        help="K-fold cross-validation (needs --protocol stratified); metric = mean ± std over folds",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Train, search and rank CNNs for Kaggle's Histopathologic Cancer Detection (PatchCamelyon).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _debug(parser, default=bool(os.environ.get("HARNESS_DEBUG")))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="registered architectures (with parameter counts) and search spaces")
    _debug(p)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_sub.add_parser("check", help="validate a Kaggle folder, build its cache, report blanks and duplicates")
    _common(check)
    check.add_argument(
        "--rehash",
        action="store_true",
        help="hash every image's bytes and rebuild the cache if they changed (the cache is keyed by names, sizes"
        " and mtimes: a file replaced by one of the same name, size and mtime is caught only this way)",
    )
    check.set_defaults(handler=cmd_data_check, backend=False)  # no model: start in 0.8 s, not 4.6 s

    p = sub.add_parser(
        "run",
        help="train registered architectures: 'baselines' or names from 'harness list'",
        description="Train, validate and predict; each run is recorded in the store with its artifacts.",
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="ARCH",
        help="'baselines' (the seed's three CNNs), architecture names, or run ids to rerun (e.g. a search trial,"
        " with its data protocol; flags given here, such as --augment or --tta, change it)",
    )
    _common(p)
    _budget(p)
    p.add_argument(
        "--save-optimizer",
        action="store_true",
        help="keep the optimiser's state in model.keras, to resume training (Adam triples the file; default: weights)",
    )
    p.add_argument(
        "--full-budget",
        action="store_true",
        help="on the built-in demo, train each model for its own epochs (default there: one epoch, a quick demo)",
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("search", help="hyperparameter search with Optuna or KerasTuner")
    p.add_argument("--trials", type=_positive_int, default=50, help="trials in the study, in total (default 50)")
    p.add_argument("--tuner", choices=("optuna", "keras-tuner"), default="optuna")
    p.add_argument("--algorithm", choices=("hyperband", "bayesian", "random"),
                   help="KerasTuner's search algorithm (default bayesian; Optuna always uses TPE)")  # fmt: skip
    p.add_argument("--space", default="widen", help="search space from 'harness list' (default widen)")
    p.add_argument("--study", help="study name; rerunning with the same name continues it (default: <space>-<tuner>)")
    p.add_argument("--timeout", type=_positive_float, metavar="MINUTES", help="stop starting trials after this long")
    p.add_argument(
        "--max-gmacs",
        type=_positive_float,
        metavar="G",
        help="prune points whose forward pass costs more than G GMACs per image (CPU budgets; seed_model3: 0.63)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="K",
        help="run K worker processes on this machine, sharing --trials (Optuna; PostgreSQL for several machines)",
    )
    _common(p)
    _budget(p)
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser(
        "predict",
        help="a saved .keras model -> a validated submission (loaded in safe mode: no code from the file runs)",
        description=PREDICT_DESCRIPTION,
    )
    p.add_argument(
        "model", metavar="MODEL.keras", help="a model saved by the harness, e.g. results/runs/<id>/model.keras"
    )
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=1, help="average over this many dihedral views")
    p.add_argument("--out", metavar="FILE", help="where to write the submission (default: <results>/submission.csv)")
    _common(p)
    p.set_defaults(handler=cmd_predict)

    ranking = "ranking metric (default val_accuracy, as the card asks; ties are broken by the other metric, val_auc)"
    p = sub.add_parser(
        "leaderboard",
        help="rank the runs that share the best run's validation set; write results/submission.csv from the best",
        description="Rank complete runs by --by (default val_accuracy, ties broken by val_auc). Only runs validated"
        " on the best run's validation set (same data folder, protocol, sample, seed, folds and images) are ranked;"
        " the others are left out and counted (--all ranks them together). The table fits the terminal.",
    )
    p.add_argument("--by", choices=("val_accuracy", "val_auc"), default="val_accuracy", help=ranking)
    p.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    p.add_argument(
        "--columns",
        metavar="A,B,...",
        help="the columns to show, e.g. rank,run,val_auc (rank run architecture origin status val_set val_accuracy"
        " val_auc test_auc parameters epochs seconds images_per_s backend submission; default: as many as fit)",
    )
    p.add_argument("--study", help="only the runs of this study")
    p.add_argument(
        "--all",
        action="store_true",
        help="rank runs on every validation set together (their scores do not compare; the 'sample · val' column"
        " says which set each was scored on)",
    )
    p.add_argument("--all-data", action="store_true", help="rank runs on every dataset, not only the latest one's")
    p.add_argument("--no-submission", action="store_true", help="do not write results/submission.csv")
    p.add_argument(
        "--test-labels", metavar="CSV", help="score each submission against known test labels (id,label): test AUC"
    )
    _common(p)
    p.set_defaults(handler=cmd_leaderboard)

    p = sub.add_parser(
        "ensemble",
        help="blend the top runs' probabilities; recorded and ranked as a run",
        description="Average the probabilities of the top K complete runs by --by that share the best run's"
        " validation set; says which runs it skipped and why.",
    )
    p.add_argument("--top", type=_positive_int, default=3, metavar="K", help="how many runs to blend (default 3)")
    p.add_argument("--by", choices=("val_accuracy", "val_auc"), default="val_accuracy", help=ranking)
    p.add_argument("--study", help="only the runs of this study")
    _common(p)
    p.set_defaults(handler=cmd_ensemble)

    p = sub.add_parser(
        "clean",
        help="free disk: stale decode caches and, on request, the models of runs outside the top K (dry run first)",
        description="Lists what it would remove and how many bytes; deletes only with --yes. Stale caches are those"
        " under <results>/cache that no data folder used by the stored runs (nor --data, nor the demo) matches now.",
    )
    p.add_argument(
        "--models-outside-top",
        type=int,
        metavar="K",
        help="also remove the model.keras of every run outside the top K of its validation set (failed runs too)",
    )
    p.add_argument("--by", choices=("val_accuracy", "val_auc"), default="val_accuracy", help=ranking)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only list what would go (the default)")
    mode.add_argument("--yes", "--apply", action="store_true", dest="apply", help="delete what is listed")
    _common(p)
    p.set_defaults(handler=cmd_clean, backend=False)  # no model: no backend to import

    p = sub.add_parser(
        "scale",
        help="does a bigger network do better? a controlled scaling study: only size varies, several seeds",
        description="Scale one base point of the cnn family along width, depth or both; train every size with"
        " several weight seeds on one fixed split, at equal epochs and at equal compute; fit AUC per doubling of"
        " GMACs with a bootstrap interval and state a verdict per budget in <results>/scale-<study>/report.md.",
    )
    p.add_argument("--base", default="seed_model2", help="seed_model1/2/3, cnn, or a run id of a cnn run")
    p.add_argument("--axis", choices=("width", "depth", "compound"), default="width", help="what is multiplied")
    p.add_argument("--multipliers", type=_numbers(float), default=(0.25, 0.5, 1.0, 2.0), metavar="M,M",
                   help="size multipliers, including 1 (default 0.25,0.5,1,2)")  # fmt: skip
    p.add_argument("--seeds", type=_positive_int, default=3, help="weight seeds per size (default 3; split fixed)")
    p.add_argument("--epochs", type=_numbers(int, allow_none=True), default=(2, 6), metavar="E,E",
                   help="equal-epoch budgets (default 2,6; 'none': only --compute-epochs)")  # fmt: skip
    p.add_argument("--compute-epochs", type=_positive_float, metavar="E",
                   help="add an equal-compute budget: each size gets the GMACs x images of E base epochs")  # fmt: skip
    p.add_argument("--sample", type=_positive_int, metavar="N", help="a stratified subset of N labelled images")
    p.add_argument("--protocol", choices=("seed", "stratified"), default="seed", help="split (default: seed)")
    p.add_argument("--seed", type=_seed, default=101, help="the split's seed; weight seeds are seed, seed+1, ...")
    p.add_argument("--batch-size", type=_positive_int, help="training batch size (default: the base's)")
    p.add_argument("--precise-bn", type=int, metavar="B", help="BatchNorm re-estimation batches (default 20)")
    p.add_argument("--study", help="study name; rerunning continues it (default scale-<base>-<axis>); with"
                   " --report-only, several names joined by commas share one report")  # fmt: skip
    p.add_argument("--epsilon", type=_positive_float, default=0.005,
                   help="AUC per doubling of GMACs below which a gain is not worth it (default 0.005)")  # fmt: skip
    p.add_argument("--workers", type=_positive_int, default=1, metavar="K", help="K processes share the points")
    p.add_argument("--max-points", type=_positive_int, metavar="N", help="run at most N points this session")
    p.add_argument("--report-only", action="store_true", help="train nothing: analyse what the store holds")
    p.add_argument("--test-labels", metavar="CSV", help="also judge on known test labels (id,label)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    _common(p)
    p.set_defaults(handler=cmd_scale)

    p = sub.add_parser("report", help="does a bigger network do better? plots and a verdict in report.md")
    p.add_argument("--study", help="only this study's trials (baselines are always included)")
    p.add_argument(
        "--html",
        action="store_true",
        help="also write report.html: one self-contained page (leaderboard, plots, learning curves, verdict)",
    )
    _common(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "bench",
        help="the seed notebook's pipeline against the harness's, stage by stage: images/s and ratios",
        description="Each stage runs the seed's way (the notebook's own calls) and the harness's on the same images.",
    )
    _debug(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="DIR", help="Kaggle-layout folder, e.g. kaggle")
    source.add_argument(
        "--synthetic", type=_positive_int, metavar="N", help="generate N labelled .tif images (default: 2000)"
    )
    p.add_argument("--stages", default="prepare,feed,train,predict", help="comma-separated (default: all four)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="timings per figure; the median is shown")
    p.add_argument(
        "--models", nargs="+", default=["seed_model2"], metavar="ARCH", help="'baselines' or names (default model 2)"
    )
    p.add_argument("--sample", type=_positive_int, metavar="N", help="labelled images for feed/train/predict")
    p.add_argument("--sizes", metavar="N,N", help="prepare sizes (default: sample/10, sample, the whole folder)")
    p.add_argument("--seed-limit", type=_positive_int, default=20_000, metavar="N",
                   help="largest size for the seed's quadratic PrepareData; beyond it is extrapolated")  # fmt: skip
    p.add_argument("--steps", type=_positive_int, default=20, help="timed training steps per repeat (default 20)")
    p.add_argument("--predict-images", type=_positive_int, default=1000, metavar="N", help="test images predicted")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="the backend's compute threads")
    p.add_argument("--no-knobs", action="store_true", help="skip mixed_bfloat16, XLA and batch-256 variants")
    p.add_argument("--no-data-check", action="store_true", help="skip the `data check` subprocess (peak RSS)")
    p.add_argument("--work", metavar="DIR", help="scratch folder (default: the system's); removed at the end")
    p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    p.set_defaults(handler=cmd_bench)
    return parser


def _workspace(args: argparse.Namespace, console: Console):
    from harness.workspace import Workspace

    return Workspace.from_flags(args.data, args.results, args.storage, console)


def cmd_list(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.registry import ARCHITECTURES, SEARCH_SPACES, build_model
    from harness.terminal.tables import Column, FittedTable

    rows = []
    for entry in ARCHITECTURES:
        training = entry.meta.get("training")
        params = build_model(entry.name).count_params()
        opt = f"{training.optimizer.name}({training.optimizer.learning_rate:g})" if training else "-"
        rows.append(
            {
                "name": entry.name,
                "baseline": "yes" if entry.meta.get("baseline") else "",
                "parameters": f"{params:,}",
                "optimizer": opt,
                "epochs": str(training.epochs) if training else "-",
                "batch": str(training.batch_size) if training else "-",
                "description": entry.description,
            }
        )

    def column(key: str, values: list[dict[str, str]]) -> Column:
        # A description wraps to lines of 40 characters or more, or goes on its own line below the table.
        justify = "right" if key in ("parameters", "epochs", "batch") else "left"
        return Column(key, key, [v[key] for v in values], justify, wrap_at=40 if key == "description" else None)

    order = ["name", "baseline", "parameters", "optimizer", "epochs", "batch", "description"]
    out.print(FittedTable("architectures", order, [column(key, rows) for key in order], 1))
    spaces = [
        {"name": e.name, "widens": str(e.meta.get("widens", "-")), "description": e.description} for e in SEARCH_SPACES
    ]
    order = ["name", "widens", "description"]
    out.print(FittedTable("search spaces", order, [column(key, spaces) for key in order], 1))
    return 0


def cmd_data_check(args: argparse.Namespace, out: Console, err: Console) -> int:
    workspace = _workspace(args, err)
    if args.rehash:
        from harness.data import rehash_cache

        out.print(rehash_cache(workspace.data_dir(), workspace.results / "cache"), markup=False, highlight=False)
    dataset = workspace.dataset(progress=True)
    out.print(f"[bold]{dataset.root}[/bold]  (cache {dataset.fingerprint})")
    for line in dataset.report.lines():
        out.print(line)
    return 0


def augment_config(args: argparse.Namespace):
    """The augmentation flags as an AugmentConfig; --augment is a preset that explicit flags override."""
    from harness.config import AugmentConfig

    preset = {"dihedral": True, "brightness": 0.1, "contrast": 0.1, "hue": 0.02} if args.augment else {}
    given = {
        "dihedral": args.dihedral or None,
        "brightness": args.brightness,
        "contrast": args.contrast,
        "hue": args.hue,
        "crop": args.crop,
    }
    values = preset | {k: v for k, v in given.items() if v is not None}
    return AugmentConfig(**values, crop_size=args.crop_size)


def _training_overrides(args: argparse.Namespace) -> dict:
    """The training flags the user gave (None and the no-op defaults are left out)."""
    augment = augment_config(args)
    return {
        key: value
        for key, value in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("time_limit", args.time_limit * 60 if args.time_limit else None),
            ("augment", augment if augment.active else None),
            ("tta", args.tta if args.tta != 1 else None),
            ("precise_bn", args.precise_bn),
            ("precision", getattr(args, "precision", None)),
        )
        if value is not None
    }


def _specs(args: argparse.Namespace, store) -> list:
    """One RunSpec per target: a registered architecture with its defaults, or a stored run to train again."""
    from dataclasses import replace

    from harness.config import DataConfig, Origin, RunSpec, TrainingConfig
    from harness.registry import ARCHITECTURES

    data = DataConfig(protocol=args.protocol, sample=args.sample, seed=args.seed, folds=args.folds)
    overrides = _training_overrides(args)
    specs = []
    for target in dict.fromkeys(args.targets):  # keep order, drop repeats
        if target not in ARCHITECTURES and target != "baselines" and store.has(target):
            stored = RunSpec.from_dict(store.get(target).spec)
            specs.append(
                replace(stored, training=replace(stored.training, **overrides), origin=Origin(kind=f"rerun:{target}"))
            )
            continue
        names = ARCHITECTURES.names(baseline=True) if target == "baselines" else [ARCHITECTURES.get(target).name]
        for name in names:
            meta = ARCHITECTURES.get(name).meta
            training = meta.get("training") or TrainingConfig()
            origin = Origin(kind="baseline" if meta.get("baseline") else "run")  # `harness run cnn` is no baseline
            specs.append(
                RunSpec(name, training=replace(training, **overrides), data=data, seed=args.seed, origin=origin)
            )
    return specs


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.ranking.leaderboard import rank, render_table
    from harness.terminal.progress import run_plan
    from harness.training.runner import Runner

    workspace = _workspace(args, err)
    store = workspace.store()
    specs = _specs(args, store)
    dataset = workspace.dataset(progress=not args.no_progress)
    if workspace.data is None and args.epochs is None and not args.full_budget:
        from harness.data.demo import demo_budget

        specs, note = demo_budget(specs)
        if note:
            err.print(note, highlight=False, markup=False)
    options = {"progress": not args.no_progress, "console": err, "save_optimizer": args.save_optimizer}
    runner = Runner(dataset, store, workspace.results, **options)
    plan = runner.overall = run_plan(specs)
    records = []
    for i, spec in enumerate(specs, 1):
        if plan is not None:
            plan.start_run(i - 1)
        err.print(
            f"[bold]run {i}/{len(specs)}[/bold] {spec.architecture}: {spec.training.epochs} "
            f"epoch{'s' if spec.training.epochs != 1 else ''}, "
            f"batch {spec.training.batch_size}, {spec.training.optimizer.name}"
            f"({spec.training.optimizer.learning_rate:g}), protocol {spec.data.protocol}"
            + (f", sample {spec.data.sample}" if spec.data.sample else "")
        )
        record = runner.run(spec)
        records.append(record)
        if record.status == "complete":
            # The epoch lines showed these very scores for the kept epoch, unless TTA or folds change them.
            how = (f" with TTA {spec.training.tta}" if spec.training.tta > 1 else "") + (
                f", mean of {spec.data.folds} folds" if spec.data.folds > 1 else ""
            )
            err.print(
                f"  [green]complete[/green] val acc {record.val_accuracy:.4f}  val AUC {record.val_auc:.4f}{how}  "
                f"(epoch {record.best_epoch} kept)  {record.images_per_second:.0f} img/s  -> {record.artifacts}",
                highlight=False,
            )
        else:
            err.print(f"  [red]{record.status}[/red]: {record.error}")
    title = "this run" + (" (synthetic demo data)" if dataset.synthetic else "")
    out.print(render_table(rank(records), title))
    return 0 if any(r.status == "complete" for r in records) else 1


def cmd_search(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.search.study import SearchOptions, run_search

    if args.time_limit:
        raise HarnessError("--time-limit does not apply to search: every trial trains for --epochs; see --timeout")
    workspace = _workspace(args, err)
    # Flags named as SearchOptions' fields pass straight through; the rest are translated.
    same = "trials tuner algorithm space study epochs sample protocol seed batch_size folds tta precise_bn precision"
    same += " max_gmacs"
    options = SearchOptions(
        **{name: getattr(args, name) for name in same.split()},
        timeout_minutes=args.timeout,
        augment=augment_config(args),
        progress=not args.no_progress,
    )
    from harness.search.workers import is_worker, run_workers

    if args.workers == 1 or is_worker():
        summary = run_search(workspace, options)
        for line in summary.lines():
            out.print(line)
        return 0
    if args.tuner != "optuna":
        raise HarnessError("--workers needs --tuner optuna: KerasTuner's own parallel mode needs a chief process")
    from dataclasses import replace

    # Flags are checked, the tables and the study created, once: not raced by K processes.
    summary = run_search(workspace, replace(options, open_only=True))
    codes = run_workers(args.argv, args.workers, err) if summary.after < options.trials else []
    summary = run_search(workspace, replace(options, open_only=True))
    for line in summary.lines():
        out.print(line)
    if codes:
        out.print(f"{args.workers} workers ran the trials: exit codes {', '.join(map(str, codes))}")
    return 0 if not any(codes) else 1


def cmd_predict(args: argparse.Namespace, out: Console, err: Console) -> int:
    from pathlib import Path

    from harness.training.predict import predict_submission

    workspace = _workspace(args, err)
    path = Path(args.out) if args.out else workspace.submission_path
    written = predict_submission(Path(args.model), workspace, path, tta=args.tta)
    out.print(f"wrote {written}", highlight=False)
    return 0


def cmd_leaderboard(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.ranking.leaderboard import (
        add_test_auc,
        choose_columns,
        comparable,
        rank,
        render_table,
        render_text,
        study_runs,
        write_best_submission,
    )

    workspace = _workspace(args, err)
    records = study_runs(workspace.store(), args.study)
    scope = ""
    if args.data or (not args.all_data and records):
        dataset = str(workspace.data_dir()) if args.data else records[-1].dataset
        others = sum(r.dataset != dataset for r in records)
        records = [r for r in records if r.dataset == dataset]
        scope = f"runs on {dataset}" + (f" ({others} on other datasets hidden: --all-data)" if others else "")
    if not records:
        err.print("no runs yet: start with 'harness run baselines'")
        return 0
    board = comparable(rank(records, args.by), args.by, mix=args.all)
    frame = board.frame  # the ranked set: the submission below comes from its best run
    if args.test_labels:
        frame = add_test_auc(frame, args.test_labels)
    columns = choose_columns(args.columns, frame)
    synthetic = bool(frame["synthetic"].fillna(False).any())
    title = f"leaderboard by {args.by}" + (" (synthetic demo data)" if synthetic else "")
    if args.format == "table":
        out.print(render_table(frame, title, args.by, columns))
        if scope:
            err.print(scope, highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(render_text(frame, args.format, columns))
    for note in board.notes():
        err.print(note, highlight=False, soft_wrap=True)
    if not args.no_submission:
        best = write_best_submission(frame, workspace.submission_path)
        if best:
            err.print(f"wrote {workspace.submission_path} from run {best}")
    return 0


def cmd_ensemble(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.ranking.ensemble import blend, select_members
    from harness.ranking.leaderboard import study_runs

    workspace = _workspace(args, err)
    store = workspace.store()
    records = study_runs(store, args.study)
    if records:
        latest = records[-1].dataset
        records = [r for r in records if r.dataset == (str(workspace.data_dir()) if args.data else latest)]
    selection = select_members(records, args.top, args.by)
    for line in selection.skipped:
        err.print(line, highlight=False, soft_wrap=True)
    members = selection.members
    record = blend(store, workspace.results, members, args.by)
    out.print(f"ensemble {record.run_id} of {len(members)} runs: " + ", ".join(m.run_id for m in members))
    out.print(f"val acc {record.val_accuracy:.4f}  val AUC {record.val_auc:.4f}  submission {record.submission}")
    return 0


def cmd_clean(args: argparse.Namespace, out: Console, err: Console) -> int:
    from pathlib import Path

    from harness.clean import delete, human, plan_caches, plan_models
    from harness.data.demo import DEMO_DIRNAME

    workspace = _workspace(args, err)
    if not workspace.results.is_dir():
        err.print(f"nothing to clean: {workspace.results} does not exist", highlight=False)
        return 0
    records = workspace.store().runs()
    # The folders whose caches are in use: every dataset a stored run used, --data, and the demo.
    folders = {Path(r.dataset) for r in records if r.dataset}
    folders |= {workspace.data.resolve()} if workspace.data else set()
    folders.add((workspace.results / DEMO_DIRNAME).resolve())
    plans = [plan_caches(workspace.results / "cache", sorted(folders))]
    if args.models_outside_top is not None:
        plans.append(plan_models(records, args.models_outside_top, args.by))
    keep = [item for plan in plans for item in plan.keep]
    doomed = [item for plan in plans for item in plan.remove]
    verb = "remove" if args.apply else "would remove"

    def line(action: str, item) -> None:  # one line per item, never folded: paths stay whole
        text = f"{action:<{len(verb)}}  {human(item.size):>9}  {item.path}  {item.reason}"
        out.print(text, highlight=False, soft_wrap=True)

    for item in keep:
        line("keep", item)
    failed = 0
    for item in doomed:
        line(verb, item)
        if args.apply:
            try:
                delete(item)
            except OSError as exc:
                failed += 1
                err.print(f"[red]error:[/red] cannot remove {item.path}: {exc.strerror or exc}", highlight=False)
    total = sum(item.size for item in doomed)
    if not doomed:
        out.print("nothing to remove", highlight=False)
    elif args.apply:
        out.print(f"freed {human(total)} ({total:,} bytes) in {len(doomed)} items", highlight=False)
    else:
        out.print(
            f"would free {human(total)} ({total:,} bytes) in {len(doomed)} items: dry run, nothing deleted;"
            " run again with --yes to delete",
            highlight=False,
            soft_wrap=True,
        )
    return 1 if failed else 0


def cmd_scale(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.ranking.leaderboard import read_test_labels
    from harness.scaling.report import write_scale_report
    from harness.scaling.study import ScaleOptions, run_scale
    from harness.search.workers import is_worker, run_workers

    studies = (args.study or "").split(",") if args.report_only else [args.study]
    if len(studies) > 1 and not all(studies):
        raise HarnessError(f"--study {args.study!r}: name studies separated by commas")
    options = ScaleOptions(
        base=args.base,
        axis=args.axis,
        multipliers=args.multipliers,
        seeds=args.seeds,
        epochs=args.epochs,
        compute_epochs=args.compute_epochs,
        sample=args.sample,
        protocol=args.protocol,
        split_seed=args.seed,
        batch_size=args.batch_size,
        precise_bn=args.precise_bn,
        study=studies[0],
        epsilon=args.epsilon,
        max_points=args.max_points,
    )
    workspace = _workspace(args, err)
    codes: list[int] = []
    if not args.report_only:
        if args.workers > 1 and not is_worker():
            codes = run_workers(args.argv, args.workers, err)
        else:
            run_scale(workspace, options, progress=not args.no_progress)
        if is_worker():
            return 0
    store = workspace.store()
    # --report-only may join studies (say, an equal-epochs one and an equal-compute one) in one report and plot.
    names = [options.study_name] if len(studies) == 1 else studies
    records = [r for name in names for r in store.runs(study=name) if r.origin == "scale"]
    if not records:
        raise HarnessError(f"study {args.study or options.study_name!r} has no points: run harness scale first")
    labels = read_test_labels(args.test_labels) if args.test_labels else None
    title = "+".join(names)
    path, verdicts, tested = write_scale_report(
        workspace.results, title, records, store.runs(), options.epsilon, labels
    )
    done = sum(r.status == "complete" for r in records)
    out.print(f"study {title}: {done} of {len(records)} recorded points complete", highlight=False)
    for verdict in verdicts:
        out.print(f"{verdict.budget}: [bold]{verdict.verdict}[/bold]: {verdict.reason}", highlight=False)
    for verdict in tested:
        out.print(f"{verdict.budget} on the test labels: {verdict.verdict}: {verdict.reason}", highlight=False)
    if not verdicts:
        out.print("no budget has two sizes with two seeds each yet: nothing to judge", highlight=False)
    out.print(f"wrote {path}", highlight=False)
    return 0 if not any(codes) else 1


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.reporting.report import write_report

    workspace = _workspace(args, err)
    path = write_report(workspace, study=args.study, html=args.html)
    out.print(f"wrote {path}", highlight=False)
    if args.html:  # a file:// page: open it in any browser, no server needed
        out.print(f"wrote {path.with_name('report.html')}", highlight=False)
    return 0


def cmd_bench(args: argparse.Namespace, out: Console, err: Console) -> int:
    from pathlib import Path

    from harness.bench import BenchOptions, render, run_bench
    from harness.registry import ARCHITECTURES

    if args.threads:
        from harness.backend import set_threads

        set_threads(args.threads)
    models: list[str] = []
    for name in args.models:
        models += ARCHITECTURES.names(baseline=True) if name == "baselines" else [ARCHITECTURES.get(name).name]
    try:
        sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    except ValueError:
        raise HarnessError(f"--sizes must be whole numbers separated by commas, got {args.sizes!r}") from None
    options = BenchOptions(
        data=Path(args.data) if args.data else None,
        synthetic=args.synthetic,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        repeats=args.repeats,
        models=tuple(dict.fromkeys(models)),
        sample=args.sample,
        sizes=sizes,
        seed_limit=args.seed_limit,
        steps=args.steps,
        predict_images=args.predict_images,
        knobs=not args.no_knobs,
        data_check=not args.no_data_check,
        work=Path(args.work) if args.work else None,
        json_path=Path(args.json) if args.json else None,
    )
    result = run_bench(options, err)
    out.print(render(result))
    for note in result.notes:
        out.print(note, highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from harness.terminal.consoles import make_consoles

    out, err = make_consoles()  # off a terminal (a log, CI, a notebook) lines are never hard-wrapped
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `search --workers` starts copies of this command
    from harness.backend import quiet_start

    try:
        if getattr(args, "backend", True):  # importing the backend (TensorFlow) costs seconds; skip it when unused
            quiet_start()
        return int(args.handler(args, out, err))
    except HarnessError as exc:
        _print_error(err, str(exc))
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]: finished runs are stored; the one in progress is marked interrupted")
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
