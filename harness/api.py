"""The Python API: each `harness` command as one call that takes the flags' settings and returns records or frames.

Every function takes where to work (`data`, `results`, `storage`, as the flags; or a ready `where=Workspace`: see
`where`) and the settings as keyword arguments named as the settings fields (epochs=1, sample=2000,
protocol="stratified", dihedral=True, ...). Durations are seconds (deadline=, time_limit=, stop_starting_after=).
A registered architecture's defaults apply here, so `harness.run("seed_model2")` trains the model `harness run
seed_model2` does. Over 350 lines by design: one short function per command (twelve), each one call into its
package and no printing; splitting it would split the one door the CLI and notebooks share.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.errors import HarnessError
from harness.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from harness.clean import Plan
    from harness.config import RunSpec
    from harness.scaling.study import ScaleOptions
    from harness.store.runs import RunRecord
    from harness.tuning.search import SearchSummary

PathLike = str | Path


def workspace(
    data: PathLike | None = None, results: PathLike | None = None, storage: str | None = None, console: Any = None
) -> Workspace:
    """Where a call reads and writes; unset ones come from HARNESS_DATA/RESULTS/STORAGE, else the demo, ./results."""
    from harness.terminal.consoles import make_console

    text = str(data) if data else None
    return Workspace.from_flags(text, str(results) if results else None, storage, console or make_console(stderr=True))


T = TypeVar("T")


def where(function: Callable[..., T]) -> Callable[..., T]:
    """Every library call takes where to work once, the same way: `data=`, `results=` and `storage=` as the flags
    (unset: HARNESS_DATA/RESULTS/STORAGE, else the demo and ./results), or a ready `where=Workspace`."""

    @functools.wraps(function)
    def call(
        *args: Any,
        data: PathLike | None = None,
        results: PathLike | None = None,
        storage: str | None = None,
        where: Workspace | None = None,
        **kwargs: Any,
    ) -> Any:
        ws = where if where is not None else workspace(data, results, storage)
        return function(*args, ws=ws, **kwargs)

    return call


@where
def plan(
    targets: str | Iterable[str],
    *,
    ws: Workspace,
    full_budget: bool = False,
    **settings: Any,
) -> list[RunSpec]:
    """The RunSpecs `run` would train with the same keywords (registered defaults, 'baselines', stored run ids, the
    demo's budget), without training."""
    from harness.run_session import jobs_for

    jobs, _ = jobs_for(targets, ws, full_budget=full_budget, **settings)
    return [job.spec for job in jobs]


@where
def run(
    targets: str | Iterable[str],
    *,
    ws: Workspace,
    progress: bool = False,
    full_budget: bool = False,
    save_optimizer: bool = False,
    resume: bool = False,
    keep_checkpoints: bool = False,
    deadline: float | None = None,
    **settings: Any,
) -> list[RunRecord]:
    """Train each target ('baselines', architecture names, stored run ids); one stored record per run.

    On the built-in demo data (no `data`), each model trains one epoch unless `epochs` or `full_budget` is given.
    resume=True: the targets are run ids of runs that stopped before finishing; each goes on from its last
    checkpointed epoch under its own id. A stored run id given with no settings does so too when it left a
    checkpoint. keep_checkpoints: keep a finished run's checkpoint (by default it is deleted). Durations are seconds:
    time_limit= stops one model's training; deadline= is the whole call's clock (data, training, predictions), each
    run getting an equal share of what is left, with its epochs sized to it when `epochs` is not given and its
    learning rate decays; <results>/submission.csv then holds the best so far by val AUC.
    """
    from harness.clock import Deadline
    from harness.run_session import jobs_for, run_jobs
    from harness.settings import check_seconds

    clock = Deadline(check_seconds(deadline, "deadline") or 0) if deadline is not None else None
    if settings.get("tensorboard") is not None:  # before any data loads: a missing writer is one line, not N failures
        from harness.training.callbacks import check_tensorboard

        check_tensorboard()
    jobs, lines = jobs_for(targets, ws, resume=resume, full_budget=full_budget, **settings)
    for line in lines:
        ws.console.print(line, highlight=False, markup=False, soft_wrap=True)
    return run_jobs(
        ws,
        jobs,
        progress=progress,
        save_optimizer=save_optimizer,
        keep_checkpoints=keep_checkpoints,
        deadline=clock,
        size_epochs=settings.get("epochs") is None,
    )


@where
def search(
    *,
    trials: int = 50,
    study: str | None = None,
    deadline: float | None = None,
    stop_starting_after: float | None = None,
    timeout: float | None = None,
    workers: int = 1,
    ws: Workspace,
    progress: bool = False,
    pruner: Any = None,
    keep_checkpoints: bool = False,
    **settings: Any,
) -> SearchSummary:
    """Open or resume a study and run the trials it still needs to reach `trials` in total.

    Durations are seconds. deadline: the whole search, from this call to the written submission (data, training,
    prediction, TTA, ensembling), on the clocked policy of harness.tuning.clock_plan; the best submission so far is
    always in <results>/submission.csv. stop_starting_after: start no trial after this long (a trial under way
    finishes). timeout: the earlier keyword, in minutes, deprecated for stop_starting_after. workers=K runs K
    processes on this machine that share the trials (Optuna); settings as StudySettings.names().
    keep_checkpoints: keep each finished trial's per-epoch checkpoint (by default it is deleted).
    """
    from harness.clock import Deadline
    from harness.settings import check_seconds
    from harness.tuning.search import SearchOptions
    from harness.tuning.workers import search_with_workers

    clock = Deadline(check_seconds(deadline, "deadline") or 0) if deadline is not None else None
    if timeout is not None:
        import warnings

        warnings.warn(
            "harness.search(timeout=MINUTES) is deprecated: pass stop_starting_after=SECONDS (or deadline=SECONDS"
            " for the whole search); every duration of the library is in seconds",
            DeprecationWarning,
            stacklevel=2,
        )
        if stop_starting_after is None:
            stop_starting_after = float(timeout) * 60
    if settings.get("tensorboard") is not None:
        from harness.training.callbacks import check_tensorboard

        check_tensorboard()
    options = SearchOptions(
        trials,
        study,
        stop_starting_after,
        progress,
        pruner,
        workers=workers,
        keep_checkpoints=keep_checkpoints,
        deadline=clock,
        **settings,
    )
    return search_with_workers(ws, options)


@dataclass
class Ranking:
    """A leaderboard: the ranked frame, the notes under it, the dataset scope and the submission written."""

    frame: pd.DataFrame
    by: str
    notes: list[str] = field(default_factory=list)
    scope: str = ""
    best: str | None = None
    submission: Path | None = None

    @property
    def synthetic(self) -> bool:
        return bool(len(self.frame)) and bool(self.frame["synthetic"].fillna(False).any())


@where
def rank_runs(
    *,
    by: str | None = None,
    study: str | None = None,
    all: bool = False,  # the flag's name: every validation set together
    all_data: bool = False,
    holdout: PathLike | None = None,
    test_labels: PathLike | None = None,
    submission: bool = True,
    submit: bool = False,
    ws: Workspace,
) -> Ranking:
    """Rank the complete runs that share the best run's validation set, on the latest dataset (all_data: every
    one; all: every validation set), by `by` (default $HARNESS_RANK_BY, else val_accuracy).

    Unless submission=False, the pick's submission is written: the whole board's to <results>/submission.csv, a
    view's (a study, all, all_data, another `by`) to <results>/submission-<view>.csv, or to submission.csv with
    submit=True. Each replacement is a note that names the old and the new run, and the old file is kept in
    <results>/submissions/."""
    import pandas as pd

    from harness.ranking.board_pick import auc_hint, board_change, default_by, submit_pick, target_for, view_name
    from harness.ranking.holdout import Holdout, holdout_note
    from harness.ranking.leaderboard import comparable, rank, study_runs
    from harness.ranking.scope import on_dataset

    by = by or default_by()
    store = ws.store()
    records = study_runs(store, study)
    scope = on_dataset(records, str(ws.data_dir()) if ws.data else None, every=all_data)
    if not scope.runs:
        return Ranking(pd.DataFrame(), by, scope=scope.text())
    labels, flag = (holdout, "--holdout") if holdout else (test_labels, "--test-labels")
    held = Holdout.read(labels, flag) if labels else None
    board = comparable(rank(scope.runs, by, held), by, mix=all)
    frame = board.frame  # the ranked set: the submission comes from its best run
    notes = board.notes() + ([holdout_note(frame)] if held else [])
    view = view_name(study, by, all, all_data)
    if view is None:
        changed = board_change(ws.results, frame, board.left_out)
        notes += [changed] if changed else []
    hint = auc_hint(frame, by)
    notes += [hint] if hint else []
    target = target_for(ws.results, view, submit)
    best = submit_pick(store, ws.results, frame, target, notes) if submission else None
    if best and view is not None and not submit:
        notes.append(f"a view of the board: its pick went to {target.name}; --submit makes it results/submission.csv")
    return Ranking(frame, by, notes, scope.text(), best, target if best else None)


def leaderboard(**options: Any) -> pd.DataFrame:
    """The leaderboard as a DataFrame (options as `rank_runs`). Unlike the command, it writes no submission unless
    submission=True is given (then as rank_runs writes it)."""
    return rank_runs(**{"submission": False, **options}).frame


@dataclass
class Blend:
    """An ensemble's stored record, its members and the runs skipped (with why)."""

    record: RunRecord
    members: list[RunRecord]
    skipped: list[str]


@where
def ensemble(
    *,
    top: int = 3,
    by: str | None = None,
    study: str | None = None,
    mean: bool = False,
    ws: Workspace,
) -> Blend:
    """Blend the top runs that share the best run's validation set, chosen and weighted on validation (greedy
    selection: a run that does not raise the blend's val AUC is left out, and named); mean=True averages all of
    them. A stored run of origin 'ensemble'."""
    from harness.ranking.ensemble import blend, select_members
    from harness.ranking.leaderboard import study_runs
    from harness.ranking.scope import on_dataset

    store = ws.store()
    scope = on_dataset(study_runs(store, study), str(ws.data_dir()) if ws.data else None)
    from harness.ranking.board_pick import default_by

    by = by or default_by()
    selection = select_members(scope.runs, top, by)
    skipped = list(selection.skipped)
    record = blend(store, ws.results, selection.members, by, greedy=not mean, left_out=skipped)
    members = [m for m in selection.members if m.run_id in (record.spec or {}).get("members", [])]
    return Blend(record, members, skipped)


@where
def report(
    *,
    study: str | None = None,
    html: bool = False,
    holdout: PathLike | None = None,
    ws: Workspace,
) -> Path:
    """Write report.md (and report.html) with the plots and the verdict; its path."""
    from harness.reporting.report import write_report

    return write_report(ws, study=study, html=html, holdout=holdout)


@where
def predict(
    model: PathLike,
    *,
    tta: int = 1,
    stain_normalise: bool = False,
    out: PathLike | None = None,
    progress: bool = False,
    ws: Workspace,
) -> Path:
    """Predict the test set with a saved .keras model; the validated submission's path."""
    from harness.training.predict import predict_submission

    out_path = Path(out) if out else ws.submission_path
    named = out is not None  # the user's own path: a symlink is followed, a FIFO or /dev/stdout written through
    return predict_submission(
        Path(model), ws, out_path, tta=tta, stain_normalise=stain_normalise, named=named, progress=progress
    )


def load_model(path: PathLike) -> Any:
    """A model.keras the harness wrote, uncompiled, in safe mode. A run's model.keras also loads with plain
    `keras.saving.load_model` (it holds the inference graph); this loads older and --save-optimizer ones too."""
    from harness.training.portable import load_model as load

    return load(path)


@where
def export(
    run_id: str,
    *,
    format: str = "savedmodel",
    out: PathLike | None = None,
    ws: Workspace,
) -> list[Path]:
    """A serving artefact of a stored run's model: a TensorFlow SavedModel folder or an .onnx file (one per fold).

    Default place: <run folder>/export/savedmodel or model.onnx. Where the backend or a package cannot do it, a
    HarnessError says so in one line.
    """
    from harness.training.portable import EXPORT_FORMATS, export_model
    from harness.training.portable import load_model as load

    if format not in EXPORT_FORMATS:
        raise HarnessError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    store = ws.store()
    if not store.has(run_id):
        raise HarnessError(f"no run {run_id!r} in the store (see harness leaderboard)")
    record = store.get(run_id)
    folder = Path(record.artifacts or "")
    models = sorted(folder.glob("model.keras")) or sorted(folder.glob("fold*/model.keras"))
    if record.status != "complete" or not models:
        raise HarnessError(f"run {run_id} has no model.keras to export (status {record.status}, folder {folder})")
    name = "savedmodel" if format == "savedmodel" else "model.onnx"
    written = []
    for model in models:
        base = Path(out) if out else model.parent / "export"
        if len(models) > 1:
            base = base / model.parent.name
        written.append(export_model(load(model), base / name, format))
    return written


@dataclass
class Cleaning:
    """What `clean` found (None: the results folder does not exist), and what it could not delete (with why)."""

    results: Path
    plan: Plan | None
    failures: list[tuple[Any, str]] = field(default_factory=list)


@where
def clean(
    *,
    models_outside_top: int | None = None,
    by: str = "val_accuracy",
    checkpoints: bool = False,
    apply: bool = False,
    ws: Workspace,
) -> Cleaning:
    """Plan what `harness clean` removes (stale caches, stopped runs' checkpoints with `checkpoints`, the models
    outside the top K); delete it only with apply=True. Nothing outside the results folder is ever removed."""
    from harness.clean import apply_plan, plan_workspace

    if not ws.results.is_dir():
        return Cleaning(ws.results, None)
    plan = plan_workspace(ws, models_outside_top, by, checkpoints=checkpoints)
    return Cleaning(ws.results, plan, apply_plan(plan, ws.results) if apply else [])


@where
def scale(
    options: ScaleOptions | None = None,
    *,
    workers: int = 1,
    progress: bool = False,
    ws: Workspace,
    **settings: Any,
) -> list[int]:
    """Run a scaling study's points still due (workers=K: K local processes share them); the workers' exit codes.
    The study's settings are `options` or the keywords of `harness scale`'s flags (base=, multipliers=, seeds=...)."""
    from harness.scaling.study import ScaleOptions
    from harness.settings import build, check_names, flat_names
    from harness.tuning.workers import run_workers

    check_names(settings, flat_names(ScaleOptions), "scale setting")
    options = build(options or ScaleOptions(), settings)
    if workers > 1:
        return run_workers(scale_points, ws, options, workers)
    from harness.scaling.study import run_scale

    run_scale(ws, options, progress=progress)
    return []


def scale_points(ws: Workspace, options: ScaleOptions) -> None:
    """One worker's share of a scaling study (a module-level function: worker processes import it by name)."""
    from harness.scaling.study import run_scale

    run_scale(ws, options, progress=False)


@dataclass
class DataCheck:
    """`harness data check`: the dataset as loaded (validated, cached) and, with rehash, what rehashing found."""

    dataset: Any
    rehashed: str | None = None


@where
def data_check(*, rehash: bool = False, ws: Workspace) -> DataCheck:
    """Validate the data folder and build (or reuse) its decoded cache; rehash=True first hashes every image's bytes
    and rebuilds the cache if they changed. Its report: `.dataset.report.lines()`."""
    rehashed = None
    if rehash:
        from harness.data import rehash_cache

        rehashed = rehash_cache(ws.data_dir(), ws.results / "cache")
    return DataCheck(ws.dataset(progress=True, page_cache=False), rehashed)  # reads no pixel: past the page cache


def architectures() -> list[dict[str, str]]:
    """The registered architectures: name, baseline, parameters (each built once, untrained), optimiser, epochs,
    batch and description."""
    from harness.registry import ARCHITECTURES, build_model

    rows = []
    for entry in ARCHITECTURES:
        training = entry.meta.get("training")
        params = build_model(entry.name).count_params()
        rows.append(
            {
                "name": entry.name,
                "baseline": "yes" if entry.meta.get("baseline") else "",
                "parameters": f"{params:,}",
                "optimizer": f"{training.optimizer.name}({training.optimizer.learning_rate:g})" if training else "-",
                "epochs": str(training.epochs) if training else "-",
                "batch": str(training.batch_size) if training else "-",
                "description": entry.description,
            }
        )
    return rows


def search_spaces() -> list[dict[str, str]]:
    """The registered search spaces: name, the architecture each widens, description."""
    from harness.registry import SEARCH_SPACES

    return [
        {"name": e.name, "widens": str(e.meta.get("widens", "-")), "description": e.description} for e in SEARCH_SPACES
    ]


@where
def scale_report(
    studies: list[str], *, epsilon: float = 0.005, test_labels: PathLike | None = None, ws: Workspace
) -> Any:
    """The report of one scaling study, or of several joined (an equal-epochs one and an equal-compute one, say):
    report.md, its plot, and the verdict per budget (harness.scaling.scale_report.ScaleReport)."""
    from harness.scaling.scale_report import report_studies

    return report_studies(ws, studies, epsilon, test_labels)


def bench(console: Any = None, **settings: Any) -> Any:
    """`harness bench` with the flags' settings as keywords (harness.bench.BenchOptions); its result table."""
    from harness.bench import BenchOptions, run_bench
    from harness.settings import build, check_names, flat_names
    from harness.terminal.consoles import make_console

    check_names(settings, flat_names(BenchOptions), "bench setting")
    return run_bench(build(BenchOptions(), settings), console or make_console(stderr=True))
