"""`harness bench`: the seed notebook's pipeline against the harness's, stage by stage."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags
from harness.errors import HarnessError


def add(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="the seed notebook's pipeline against the harness's, stage by stage: images/s and ratios",
        description="Each stage runs the seed's way (the notebook's own calls) and the harness's on the same images.",
    )
    flags.debug(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="DIR", help="Kaggle-layout folder, e.g. kaggle")
    source.add_argument(
        "--synthetic", type=flags.positive_int, metavar="N", help="generate N labelled .tif images (default: 2000)"
    )
    p.add_argument("--stages", default="prepare,feed,train,predict", help="comma-separated (default: all four)")
    p.add_argument("--repeats", type=flags.positive_int, default=3, help="timings per figure; the median is shown")
    p.add_argument(
        "--models", nargs="+", default=["seed_model2"], metavar="ARCH", help="'baselines' or names (default model 2)"
    )
    p.add_argument("--sample", type=flags.positive_int, metavar="N", help="labelled images for feed/train/predict")
    p.add_argument("--sizes", metavar="N,N", help="prepare sizes (default: sample/10, sample, the whole folder)")
    p.add_argument("--seed-limit", type=flags.positive_int, default=20_000, metavar="N",
                   help="largest size for the seed's quadratic PrepareData; beyond it is extrapolated")  # fmt: skip
    p.add_argument("--steps", type=flags.positive_int, default=20, help="timed training steps per repeat (default 20)")
    p.add_argument("--predict-images", type=flags.positive_int, default=1000, metavar="N", help="test images predicted")
    p.add_argument("--threads", type=flags.positive_int, metavar="N", help="the backend's compute threads")
    p.add_argument("--no-knobs", action="store_true", help="skip mixed_bfloat16, XLA and batch-256 variants")
    p.add_argument("--no-data-check", action="store_true", help="skip the `data check` subprocess (peak RSS)")
    p.add_argument("--work", metavar="DIR", help="scratch folder (default: the system's); removed at the end")
    p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace, out: Console, err: Console) -> int:
    from pathlib import Path

    from harness.bench import BenchOptions, render, run_bench
    from harness.plans import architectures

    if args.threads:
        from harness.backend import set_threads

        set_threads(args.threads)
    models = architectures(args.models)  # 'baselines' expanded, repeats dropped
    try:
        sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    except ValueError:
        raise HarnessError(f"--sizes must be whole numbers separated by commas, got {args.sizes!r}") from None
    options = BenchOptions(
        data=Path(args.data) if args.data else None,
        synthetic=args.synthetic,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        repeats=args.repeats,
        models=tuple(models),
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
