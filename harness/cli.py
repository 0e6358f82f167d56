"""The `harness` command: each subcommand parses its flags, makes one library call and prints the result."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ start-up chatter (cuInit...) quiet

from rich.console import Console

from harness.config import PRECISIONS
from harness.errors import HarnessError

EXAMPLES = """\
examples:
  harness run baselines --epochs 2                 # the seed's three CNNs on the built-in demo data
  harness run baselines --data ~/kaggle/histopathologic-cancer-detection --sample 20000 --epochs 3
  harness search --trials 50 --sample 4000 --epochs 3
  harness search --trials 50 --workers 4 --storage postgresql://user@db/harness   # one study, many processes
  harness predict results/runs/<run_id>/model.keras --tta 8 --out submission.csv
  harness leaderboard --by val_auc --format markdown
  harness bench --data ../shared/datasets/pcam-sample   # seed notebook vs harness, images/s per stage
"""


def _common(parser: argparse.ArgumentParser) -> None:
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


def _budget(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("budget and data protocol")
    group.add_argument("--epochs", type=_positive_int, help="epochs per model (default: each model's own)")
    group.add_argument("--sample", type=_positive_int, metavar="N", help="use a stratified subset of N labelled images")
    group.add_argument("--protocol", choices=("seed", "stratified"), default="seed", help="split (default: seed)")
    group.add_argument("--seed", type=int, default=101, help="random seed for the sample, split and weights")
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="registered architectures (with parameter counts) and search spaces")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_sub.add_parser("check", help="validate a Kaggle folder, build its cache, report blanks and duplicates")
    _common(check)
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
    )
    p.add_argument(
        "model", metavar="MODEL.keras", help="a model saved by the harness, e.g. results/runs/<id>/model.keras"
    )
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=1, help="average over this many dihedral views")
    p.add_argument("--out", metavar="FILE", help="where to write the submission (default: <results>/submission.csv)")
    _common(p)
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("leaderboard", help="rank every run; write results/submission.csv from the best")
    p.add_argument("--by", choices=("val_accuracy", "val_auc"), default="val_accuracy", help="ranking metric")
    p.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    p.add_argument("--study", help="only the runs of this study")
    p.add_argument("--all-data", action="store_true", help="rank runs on every dataset, not only the latest one's")
    p.add_argument("--no-submission", action="store_true", help="do not write results/submission.csv")
    p.add_argument(
        "--test-labels", metavar="CSV", help="score each submission against known test labels (id,label): test AUC"
    )
    _common(p)
    p.set_defaults(handler=cmd_leaderboard)

    p = sub.add_parser("ensemble", help="blend the top runs' probabilities; recorded and ranked as a run")
    p.add_argument("--top", type=_positive_int, default=3, metavar="K", help="how many runs to blend (default 3)")
    p.add_argument("--by", choices=("val_accuracy", "val_auc"), default="val_auc", help="ranking metric")
    p.add_argument("--study", help="only the runs of this study")
    _common(p)
    p.set_defaults(handler=cmd_ensemble)

    p = sub.add_parser("report", help="does a bigger network do better? plots and a verdict in report.md")
    p.add_argument("--study", help="only this study's trials (baselines are always included)")
    _common(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "bench",
        help="the seed notebook's pipeline against the harness's, stage by stage: images/s and ratios",
        description="Each stage runs the seed's way (the notebook's own calls) and the harness's on the same images.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="DIR", help="Kaggle-layout folder, e.g. ../shared/datasets/pcam-sample")
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
    from rich.table import Table

    from harness.registry import ARCHITECTURES, SEARCH_SPACES, build_model

    table = Table(title="architectures", header_style="bold")
    for column in ("name", "baseline", "parameters", "optimizer", "epochs", "batch", "description"):
        table.add_column(column, justify="right" if column in ("parameters", "epochs", "batch") else "left")
    for entry in ARCHITECTURES:
        training = entry.meta.get("training")
        params = build_model(entry.name).count_params()
        opt = f"{training.optimizer.name}({training.optimizer.learning_rate:g})" if training else "-"
        table.add_row(
            entry.name,
            "yes" if entry.meta.get("baseline") else "",
            f"{params:,}",
            opt,
            str(training.epochs) if training else "-",
            str(training.batch_size) if training else "-",
            entry.description,
        )
    out.print(table)
    spaces = Table(title="search spaces", header_style="bold")
    spaces.add_column("name")
    spaces.add_column("widens")
    spaces.add_column("description")
    for entry in SEARCH_SPACES:
        spaces.add_row(entry.name, str(entry.meta.get("widens", "-")), entry.description)
    out.print(spaces)
    return 0


def cmd_data_check(args: argparse.Namespace, out: Console, err: Console) -> int:
    workspace = _workspace(args, err)
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
            training = ARCHITECTURES.get(name).meta.get("training") or TrainingConfig()
            specs.append(RunSpec(name, training=replace(training, **overrides), data=data, seed=args.seed))
    return specs


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.leaderboard import rank, render_table
    from harness.runner import Runner

    workspace = _workspace(args, err)
    store = workspace.store()
    specs = _specs(args, store)
    dataset = workspace.dataset(progress=not args.no_progress)
    runner = Runner(dataset, store, workspace.results, progress=not args.no_progress, console=err)
    records = []
    for i, spec in enumerate(specs, 1):
        err.print(
            f"[bold]run {i}/{len(specs)}[/bold] {spec.architecture}: {spec.training.epochs} epochs, "
            f"batch {spec.training.batch_size}, {spec.training.optimizer.name}"
            f"({spec.training.optimizer.learning_rate:g}), protocol {spec.data.protocol}"
            + (f", sample {spec.data.sample}" if spec.data.sample else "")
        )
        record = runner.run(spec)
        records.append(record)
        if record.status == "complete":
            err.print(
                f"  [green]complete[/green] val acc {record.val_accuracy:.4f}  val AUC {record.val_auc:.4f}  "
                f"{record.images_per_second:.0f} img/s  -> {record.artifacts}"
            )
        else:
            err.print(f"  [red]{record.status}[/red]: {record.error}")
    title = "this run" + (" (synthetic demo data)" if dataset.synthetic else "")
    out.print(render_table(rank(records), title))
    return 0 if any(r.status == "complete" for r in records) else 1


def cmd_search(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.search import SearchOptions, run_search

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
    from harness.workers import is_worker, run_workers

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

    from harness.predict import predict_submission

    workspace = _workspace(args, err)
    path = Path(args.out) if args.out else workspace.submission_path
    written = predict_submission(Path(args.model), workspace, path, tta=args.tta)
    out.print(f"wrote {written}", highlight=False)
    return 0


def cmd_leaderboard(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.leaderboard import add_test_auc, rank, render_table, render_text, write_best_submission

    workspace = _workspace(args, err)
    records = workspace.store().runs(study=args.study)
    scope = ""
    if args.data or (not args.all_data and records):
        dataset = str(workspace.data_dir()) if args.data else records[-1].dataset
        others = sum(r.dataset != dataset for r in records)
        records = [r for r in records if r.dataset == dataset]
        scope = f"runs on {dataset}" + (f" ({others} on other datasets hidden: --all-data)" if others else "")
    if not records:
        err.print("no runs yet: start with 'harness run baselines'")
        return 0
    frame = rank(records, args.by)
    if args.test_labels:
        frame = add_test_auc(frame, args.test_labels)
    synthetic = bool(frame["synthetic"].fillna(False).any())
    title = f"leaderboard by {args.by}" + (" (synthetic demo data)" if synthetic else "")
    if args.format == "table":
        out.print(render_table(frame, title))
        if scope:
            err.print(scope)
    else:
        sys.stdout.write(render_text(frame, args.format))
    if not args.no_submission:
        best = write_best_submission(frame, workspace.submission_path)
        if best:
            err.print(f"wrote {workspace.submission_path} from run {best}")
    return 0


def cmd_ensemble(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.ensemble import blend, choose_members

    workspace = _workspace(args, err)
    store = workspace.store()
    records = store.runs(study=args.study)
    if records:
        latest = records[-1].dataset
        records = [r for r in records if r.dataset == (str(workspace.data_dir()) if args.data else latest)]
    members = choose_members(records, args.top, args.by)
    record = blend(store, workspace.results, members, args.by)
    out.print(f"ensemble {record.run_id} of {len(members)} runs: " + ", ".join(m.run_id for m in members))
    out.print(f"val acc {record.val_accuracy:.4f}  val AUC {record.val_auc:.4f}  submission {record.submission}")
    return 0


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.report import write_report

    workspace = _workspace(args, err)
    path = write_report(workspace, study=args.study)
    out.print(f"wrote {path}")
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
    # Piped output (a file, CI) gets a wide console so tables are not folded into 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=220)
    err = Console(stderr=True)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `search --workers` starts copies of this command
    from harness.backend import quiet_start

    try:
        if getattr(args, "backend", True):  # importing the backend (TensorFlow) costs seconds; skip it when unused
            quiet_start()
        return int(args.handler(args, out, err))
    except HarnessError as exc:
        # One short line whatever the input held (a 10 MB id, a multi-line driver message).
        from rich.markup import escape

        message = " ".join(line.strip() for line in str(exc).strip().splitlines())
        message = message if len(message) <= 1000 else f"{message[:1000]}... ({len(message):,} characters)"
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]: finished runs are stored; the one in progress is marked interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
