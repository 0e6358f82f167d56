"""`harness scale`: a controlled scaling study. One base point of the `cnn` family, only its size varied (width,
depth or both), several weight seeds on one fixed split, at equal-epoch and equal-compute budgets.

Every point is an ordinary run in the store (origin `scale`, study = the study's name, trial = the point's index),
so it shows on the leaderboard, a rerun skips what is done, and any number of processes can share a study: a
point is claimed by inserting its run id, which the store accepts once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.config import DataConfig, Origin, RunSpec, TrainingConfig, check_study_name
from harness.cost import Cost, architecture_cost
from harness.errors import HarnessError
from harness.registry import ARCHITECTURES
from harness.settings import knob, numbers, positive_float, positive_int, same_as
from harness.store.runs import RunRecord, RunStore

AXES = ("width", "depth", "compound")
SCALE_PROTOCOLS = ("seed", "stratified")  # one fixed split: K folds or slide groups would vary it per point
DEFAULT_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0)
DEFAULT_EPOCHS = (2, 6)
MIN_WIDTH = 4  # a narrower conv is no network; multipliers that go below it are clamped and said so
MAX_ATTEMPTS = 2  # a point that failed (a killed worker, a NaN loss) is tried once more, then left failed


@dataclass(frozen=True)
class ScaleOptions:
    """The settings of `harness scale` (its flags and the library's keywords derive from these fields)."""

    base: str = field(default="seed_model2", metadata=knob("seed_model1/2/3, cnn, or a run id of a cnn run"))
    axis: str = field(default="width", metadata=knob("what is multiplied", choices=AXES))
    multipliers: tuple[float, ...] = field(
        default=DEFAULT_MULTIPLIERS,
        metadata=knob("size multipliers, including 1 (default 0.25,0.5,1,2)", metavar="M,M", parse=numbers(float)),
    )
    seeds: int = field(default=3, metadata=knob("weight seeds per size (default 3; split fixed)", parse=positive_int))
    epochs: tuple[int, ...] = field(
        default=DEFAULT_EPOCHS,
        metadata=knob(
            "equal-epoch budgets (default 2,6; 'none': only --compute-epochs)",
            metavar="E,E",
            parse=numbers(int, allow_none=True),
        ),
    )
    compute_epochs: float | None = field(
        default=None,
        metadata=knob(
            "add an equal-compute budget: each size gets the GMACs x images of E base epochs",
            metavar="E",
            parse=positive_float,
        ),
    )
    # The data and training settings a study shares with `harness run`, declared there (config.py) once.
    sample: int | None = field(default=None, metadata=same_as(DataConfig, "sample", budget=False))
    protocol: str = field(
        default="seed", metadata=same_as(DataConfig, "protocol", choices=SCALE_PROTOCOLS, budget=False)
    )
    split_seed: int = field(
        default=101,
        metadata=same_as(
            DataConfig, "seed", flag="--seed", metavar="SEED", budget=False,
            help="the split's seed; weight seeds are seed, seed+1, ... (0 to 4294967295)",
        ),
    )  # fmt: skip
    batch_size: int | None = field(default=None, metadata=same_as(TrainingConfig, "batch_size", help="training batch"
                                   " size (default: the base's)"))  # fmt: skip
    precise_bn: int | None = field(default=None, metadata=same_as(TrainingConfig, "precise_bn", budget=False))
    study: str | None = field(
        default=None,
        metadata=knob(
            "study name; rerunning continues it (default scale-<base>-<axis>); with --report-only, several names"
            " joined by commas share one report"
        ),
    )
    epsilon: float = field(
        default=0.005,
        metadata=knob(
            "AUC per doubling of GMACs below which a gain is not worth it (default 0.005)", parse=positive_float
        ),
    )
    max_points: int | None = field(
        default=None, metadata=knob("run at most N points this session", metavar="N", parse=positive_int)
    )

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise HarnessError(f"--axis must be one of {', '.join(AXES)}, got {self.axis!r}")
        if len(set(self.multipliers)) < 2 or min(self.multipliers) <= 0:
            raise HarnessError(f"--multipliers needs two or more distinct positive values, got {self.multipliers}")
        if 1.0 not in self.multipliers:
            raise HarnessError("--multipliers must include 1 (the base point the verdict compares against)")
        if self.seeds < 2:
            raise HarnessError(f"--seeds must be at least 2 (the spread over seeds is the noise), got {self.seeds}")
        if not self.epochs and self.compute_epochs is None:
            raise HarnessError("give at least one budget: --epochs or --compute-epochs")
        if self.compute_epochs is not None and self.compute_epochs <= 0:
            raise HarnessError(f"--compute-epochs must be positive, got {self.compute_epochs}")
        if not 0 < self.epsilon < 0.5:
            raise HarnessError(f"--epsilon must be between 0 and 0.5 AUC per doubling, got {self.epsilon}")

    @property
    def study_name(self) -> str:
        return check_study_name(self.study or f"scale-{self.base}-{self.axis}")


@dataclass(frozen=True)
class Base:
    """The point every size is scaled from: `cnn` keyword arguments, its recipe and its data protocol."""

    name: str
    kwargs: dict[str, Any]
    training: TrainingConfig
    data: DataConfig


@dataclass(frozen=True)
class Point:
    """One run of the study: a budget, a size and a weight seed."""

    index: int
    budget: str  # "2 epochs" or "compute"
    multiplier: float
    seed: int
    kwargs: dict[str, Any]
    cost: Cost
    epochs: int
    steps_per_epoch: int | None = None  # None: full passes


@dataclass
class ScaleOutcome:
    """What one session did: the points run, skipped and failed, and every record of the study."""

    study: str
    points: list[Point]
    ran: list[RunRecord] = field(default_factory=list)
    skipped: int = 0
    records: list[RunRecord] = field(default_factory=list)


def resolve_base(name: str, store: RunStore | None, options: ScaleOptions) -> Base:
    """A registered seed model (its `cnn` point and the notebook's recipe), or a stored run of `cnn`."""
    data = DataConfig(protocol=options.protocol, sample=options.sample, seed=options.split_seed)
    if name in ARCHITECTURES:
        entry = ARCHITECTURES.get(name)
        point = {} if name == "cnn" else entry.cnn_point  # cnn itself: its own defaults
        if point is None:
            raise HarnessError(f"--base {name}: not a point of the cnn family; use seed_model1/2/3, cnn or a run id")
        return Base(name, dict(point), entry.training or TrainingConfig(), data)
    if store is not None and store.has(name):
        spec = RunSpec.from_dict(store.get(name).spec or {})
        point = spec.arch_kwargs if spec.architecture == "cnn" else None
        if spec.architecture in ARCHITECTURES and spec.architecture != "cnn":
            point = ARCHITECTURES.get(spec.architecture).cnn_point
        if point is None:
            raise HarnessError(f"--base {name}: run of {spec.architecture}, not of the cnn family")
        return Base(name, dict(point), spec.training, spec.data)
    raise HarnessError(f"--base {name!r} is neither a registered architecture nor a run in the store")


def scaled(kwargs: dict[str, Any], axis: str, multiplier: float) -> dict[str, Any]:
    """`cnn` keyword arguments with the convs' widths and/or their number per block multiplied (the head stays)."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(ARCHITECTURES.get("cnn").builder).parameters.items()}
    point = {**{k: defaults[k] for k in ("widths", "convs", "padding")}, **kwargs}
    out = dict(kwargs)
    if axis in ("width", "compound"):
        out["widths"] = [max(MIN_WIDTH, round(w * multiplier)) for w in point["widths"]]
    if axis in ("depth", "compound"):
        out["convs"] = [max(1, round(c * multiplier)) for c in point["convs"]]
        try:
            architecture_cost("cnn", **{**point, **out})
        except ValueError:  # the cost function refuses what the builder would: a feature map below 1x1
            raise HarnessError(
                f"--multipliers {multiplier:g} on depth gives convs {out['convs']}, which shrink a 96px input below"
                f" 1x1 with {point['padding']} padding; choose smaller depth multipliers"
            ) from None
    return out


def design(
    base: Base, options: ScaleOptions, n_train: int, cost: Callable[..., Cost] = architecture_cost
) -> list[Point]:
    """Every point of the study in a fixed order (budgets, then sizes, then seeds): the index names a point."""
    multipliers = sorted(set(options.multipliers))
    sizes = {m: scaled(base.kwargs, options.axis, m) for m in multipliers}
    costs = {m: cost("cnn", **kw) for m, kw in sizes.items()}
    batch = options.batch_size or base.training.batch_size
    steps_full = math.ceil(n_train / batch)
    points: list[Point] = []
    seeds = [options.split_seed + k for k in range(options.seeds)]  # the first is an ordinary run's weight seed

    def add(budget: str, m: float, epochs: int, steps: int | None) -> None:
        for seed in seeds:
            points.append(Point(len(points), budget, m, seed, sizes[m], costs[m], epochs, steps))

    for epochs in options.epochs:
        for m in multipliers:
            add(f"{epochs} epochs", m, epochs, None)
    if options.compute_epochs is not None:
        # Equal compute: every size gets the base's GMACs x images of `compute_epochs` passes. GMAC-epochs rather
        # than wall time: the same on any machine and under any load, so a rerun trains the same points.
        budget_steps = options.compute_epochs * steps_full * costs[1.0].gmacs
        for m in multipliers:
            steps = max(1, round(budget_steps / costs[m].gmacs))
            epochs = max(1, math.ceil(steps / steps_full))
            add(f"compute {options.compute_epochs:g}", m, epochs, max(1, round(steps / epochs)))
    return points


def spec_of(point: Point, base: Base, options: ScaleOptions, study: str) -> RunSpec:
    training = dataclasses.replace(
        base.training,
        epochs=point.epochs,
        steps_per_epoch=point.steps_per_epoch,
        batch_size=options.batch_size or base.training.batch_size,
        precise_bn=base.training.precise_bn if options.precise_bn is None else options.precise_bn,
    )
    return RunSpec(
        "cnn",
        arch_kwargs=dict(point.kwargs),
        training=training,
        data=base.data,
        seed=point.seed,
        origin=Origin(kind="scale", study=study, trial=point.index),
    )


def point_facts(point: Point, base: Base, axis: str) -> dict[str, Any]:
    """What the analysis reads back from a record (stored as its hyperparameters)."""
    return {
        "base": base.name,
        "axis": axis,
        "budget": point.budget,
        "multiplier": point.multiplier,
        "seed": point.seed,
        "epochs": point.epochs,
        "steps_per_epoch": point.steps_per_epoch,
        "parameters": point.cost.parameters,
        "gmacs": point.cost.gmacs,
    }


def pending(points: list[Point], records: list[RunRecord]) -> tuple[list[Point], int]:
    """The points still to run, and how many are done or being run elsewhere (alive, or out of attempts)."""
    by_trial: dict[int, list[RunRecord]] = {}
    for record in records:
        if record.trial is not None:
            by_trial.setdefault(record.trial, []).append(record)
    todo = []
    for point in points:
        tries = by_trial.get(point.index, [])
        if any(r.status in ("complete", "running") for r in tries) or len(tries) >= MAX_ATTEMPTS:
            continue
        todo.append(point)
    return todo, len(points) - len(todo)


def run_id_of(study: str, point: Point, attempt: int) -> str:
    return f"{study}-p{point.index:03d}-a{attempt}"


def run_scale(workspace: Any, options: ScaleOptions, progress: bool = True) -> ScaleOutcome:
    """Run the study's points still due (in order; a rerun continues; several processes share them)."""
    import sqlalchemy.exc

    from harness.training.runner import Runner

    store = workspace.store()
    store.reap_dead()  # runs of killed processes end as failed, so their points are run again
    study = options.study_name
    foreign = {r.origin for r in store.runs(study=study) if r.origin != "scale"}
    if foreign:
        raise HarnessError(f"--study {study!r} already holds runs of another kind ({', '.join(sorted(foreign))})")
    base = resolve_base(options.base, store, options)
    dataset = workspace.dataset(progress=progress)
    runner = Runner(dataset, store, workspace.results, progress=progress, console=workspace.console)
    n_train = len(runner.splits_for(RunSpec("cnn", data=base.data))[0].train)
    points = design(base, options, n_train)
    check_design(study, points, store.runs(study=study))
    outcome = ScaleOutcome(study, points)
    todo, outcome.skipped = pending(points, store.runs(study=study))
    console = workspace.console
    console.print(
        f"[bold]scale {study}[/bold]: {len(points)} points ({len(set(p.multiplier for p in points))} sizes x"
        f" {options.seeds} seeds x {len({p.budget for p in points})} budgets), {outcome.skipped} done or running"
        f" elsewhere, {len(todo)} to run",
        highlight=False,
    )
    for count, point in enumerate(todo, start=1):
        if options.max_points is not None and len(outcome.ran) >= options.max_points:
            break
        tries = [r for r in store.runs(study=study) if r.trial == point.index]
        if any(r.status in ("complete", "running") for r in tries) or len(tries) >= MAX_ATTEMPTS:
            continue  # another process took it since
        steps = f", {point.steps_per_epoch} steps an epoch" if point.steps_per_epoch else ""
        console.print(
            f"point {count}/{len(todo)} #{point.index}: {options.axis} x{point.multiplier:g}, {point.budget},"
            f" seed {point.seed}: {point.cost.parameters:,} parameters, {point.cost.gmacs:.3f} GMACs,"
            f" {point.epochs} epochs{steps}",
            highlight=False,
        )
        try:
            record = runner.run(
                spec_of(point, base, options, study),
                hyperparameters=point_facts(point, base, options.axis),
                run_id=run_id_of(study, point, len(tries) + 1),
            )
        except sqlalchemy.exc.IntegrityError:
            continue  # another process inserted this run id first: the point is theirs
        outcome.ran.append(record)
        if record.status == "complete":
            console.print(f"  val AUC {record.val_auc:.4f}  {record.seconds:.0f} s", highlight=False)
        else:
            console.print(f"  [red]{record.status}[/red]: {record.error}", highlight=False)
    outcome.records = [r for r in store.runs(study=study) if r.origin == "scale"]
    return outcome


def check_design(study: str, points: list[Point], records: list[RunRecord]) -> None:
    """A study is one design: a rerun with other flags would mix two experiments under one name."""
    for record in records:
        facts = record.hyperparameters or {}
        if record.trial is None or record.trial >= len(points):
            raise HarnessError(f"study {study!r} has more points than these flags design; repeat its flags")
        point = points[record.trial]
        if (facts.get("budget"), facts.get("multiplier"), facts.get("seed")) != (
            point.budget,
            point.multiplier,
            point.seed,
        ):
            raise HarnessError(
                f"study {study!r} was designed with other flags (its point #{point.index} is x"
                f"{facts.get('multiplier')} {facts.get('budget')} seed {facts.get('seed')}); repeat them or name"
                " another --study"
            )
