"""The Python API: each `harness` command as one call that takes the flags' settings and returns records or frames.

Every function takes where to work (`data`, `results`, `storage`, as the flags; or a ready `where=Workspace`) and
the settings as keyword arguments named as the settings fields (epochs=1, sample=2000, protocol="stratified",
dihedral=True, ...). A registered architecture's defaults apply here, so `harness.run("seed_model2")` trains the
model `harness run seed_model2` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from harness.config import RunSpec
    from harness.scaling.study import ScaleOptions
    from harness.store.runs import RunRecord
    from harness.tuning.study import SearchSummary

PathLike = str | Path


def workspace(
    data: PathLike | None = None, results: PathLike | None = None, storage: str | None = None, console: Any = None
) -> Workspace:
    """Where a call reads and writes; unset ones come from HARNESS_DATA/RESULTS/STORAGE, else the demo, ./results."""
    from harness.terminal.consoles import make_console

    text = str(data) if data else None
    return Workspace.from_flags(text, str(results) if results else None, storage, console or make_console(stderr=True))


def _ws(where: Workspace | None, data: PathLike | None, results: PathLike | None, storage: str | None) -> Workspace:
    return where if where is not None else workspace(data, results, storage)


def plan(targets: str | Iterable[str], *, where: Workspace | None = None, **settings: Any) -> list[RunSpec]:
    """The RunSpecs `run` would train (registered defaults, 'baselines', stored run ids), without training."""
    from harness.plans import plan as make_plan

    return make_plan(targets, where.store() if where is not None else None, **settings)


def run(
    targets: str | Iterable[str],
    *,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
    progress: bool = False,
    full_budget: bool = False,
    save_optimizer: bool = False,
    resume: bool = False,
    keep_checkpoints: bool = False,
    **settings: Any,
) -> list[RunRecord]:
    """Train each target ('baselines', architecture names, stored run ids); one stored record per run.

    On the built-in demo data (no `data`), each model trains one epoch unless `epochs` or `full_budget` is given.
    resume=True: the targets are run ids of runs that stopped before finishing; each goes on from its last
    checkpointed epoch under its own id. A stored run id given with no settings does so too when it left a
    checkpoint. keep_checkpoints: keep a finished run's checkpoint (by default it is deleted).
    """
    from harness.plans import plan as make_plan
    from harness.terminal.progress import run_plan
    from harness.training.runner import Runner, continues, resume_spec

    if settings.get("tensorboard") is not None:  # before any data loads: a missing writer is one line, not N failures
        from harness.training.callbacks import check_tensorboard

        check_tensorboard()
    ws = _ws(where, data, results, storage)
    store = ws.store()
    names = [targets] if isinstance(targets, str) else list(targets)
    changed = sorted(k for k, v in settings.items() if v is not None)
    if resume and changed:
        raise HarnessError(f"--resume continues a run with its own settings; drop {', '.join(changed)}")
    # A run that stopped before finishing goes on from its checkpoint, under its own id.
    going_on = list(dict.fromkeys(names)) if resume else [t for t in names if not changed and continues(store, t)]
    resumed = [(resume_spec(store, t), t) for t in going_on]
    rest = [t for t in names if t not in going_on]
    specs = make_plan(rest, store, **settings) if rest else []
    dataset = ws.dataset(progress=progress)
    for _, run_id in resumed:
        trained_on = store.get(run_id).dataset
        if trained_on and str(trained_on) != str(dataset.root):
            raise HarnessError(f"run {run_id} trained on {trained_on}; resume it with --data {trained_on}")
    if ws.data is None and settings.get("epochs") is None and not full_budget:
        from harness.data.demo import demo_budget

        specs, note = demo_budget(specs)
        if note:
            ws.console.print(note, highlight=False, markup=False)
    runner = Runner(dataset, store, ws.results, progress=progress, console=ws.console, save_optimizer=save_optimizer)
    runner.keep_checkpoints = keep_checkpoints
    jobs: list[tuple[RunSpec, str | None]] = [*resumed, *((spec, None) for spec in specs)]
    overall = runner.overall = run_plan([spec for spec, _ in jobs])
    records = []
    for i, (spec, resumed_id) in enumerate(jobs, 1):
        if overall is not None:
            overall.start_run(i - 1)
        again = f" (resuming {resumed_id} from its checkpoint)" if resumed_id else ""
        ws.console.print(f"[bold]run {i}/{len(jobs)}[/bold] {_describe(spec)}{again}")
        record = runner.run(spec, run_id=resumed_id, resume=resumed_id is not None)
        records.append(record)
        if record.status == "complete":
            # The epoch lines showed these very scores for the kept epoch, unless TTA or folds change them.
            how = (f" with TTA {spec.training.tta}" if spec.training.tta > 1 else "") + (
                f", mean of {spec.data.folds} folds" if spec.data.folds > 1 else ""
            )
            ws.console.print(
                f"  [green]complete[/green] val acc {record.val_accuracy:.4f}  val AUC {record.val_auc:.4f}{how}  "
                f"(epoch {record.best_epoch} kept)  {record.images_per_second:.0f} img/s  -> {record.artifacts}",
                highlight=False,
            )
        else:
            ws.console.print(f"  [red]{record.status}[/red]: {record.error}")
    return records


def _describe(spec: RunSpec) -> str:
    training = spec.training
    return (
        f"{spec.architecture}: {training.epochs} epoch{'s' if training.epochs != 1 else ''}, "
        f"batch {training.batch_size}, {training.optimizer.name}({training.optimizer.learning_rate:g}), "
        f"protocol {spec.data.protocol}" + (f", sample {spec.data.sample}" if spec.data.sample else "")
    )


def search(
    *,
    trials: int = 50,
    study: str | None = None,
    timeout: float | None = None,
    workers: int = 1,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
    progress: bool = False,
    pruner: Any = None,
    keep_checkpoints: bool = False,
    **settings: Any,
) -> SearchSummary:
    """Open or resume a study and run the trials it still needs to reach `trials` in total (timeout: minutes).

    workers=K runs K processes on this machine that share the trials (Optuna); settings as StudySettings.names().
    keep_checkpoints: keep each finished trial's per-epoch checkpoint (by default it is deleted).
    """
    from harness.tuning.study import SearchOptions
    from harness.tuning.workers import search_with_workers

    if settings.get("tensorboard") is not None:
        from harness.training.callbacks import check_tensorboard

        check_tensorboard()
    options = SearchOptions(
        trials, study, timeout, progress, pruner, workers=workers, keep_checkpoints=keep_checkpoints, **settings
    )
    return search_with_workers(_ws(where, data, results, storage), options)


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


def rank_runs(
    *,
    by: str = "val_accuracy",
    study: str | None = None,
    all: bool = False,  # the flag's name: every validation set together
    all_data: bool = False,
    holdout: PathLike | None = None,
    test_labels: PathLike | None = None,
    submission: bool = True,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
) -> Ranking:
    """Rank the complete runs that share the best run's validation set, on the latest dataset (all_data: every
    one; all: every validation set); write <results>/submission.csv from the best unless submission=False."""
    import pandas as pd

    from harness.ranking.holdout import Holdout, holdout_note
    from harness.ranking.leaderboard import comparable, rank, study_runs, write_best_submission
    from harness.ranking.scope import on_dataset

    ws = _ws(where, data, results, storage)
    records = study_runs(ws.store(), study)
    scope = on_dataset(records, str(ws.data_dir()) if ws.data else None, every=all_data)
    if not scope.runs:
        return Ranking(pd.DataFrame(), by, scope=scope.text())
    labels, flag = (holdout, "--holdout") if holdout else (test_labels, "--test-labels")
    held = Holdout.read(labels, flag) if labels else None
    board = comparable(rank(scope.runs, by, held), by, mix=all)
    frame = board.frame  # the ranked set: the submission comes from its best run
    notes = board.notes() + ([holdout_note(frame)] if held else [])
    best = write_best_submission(frame, ws.submission_path) if submission else None
    return Ranking(frame, by, notes, scope.text(), best, ws.submission_path if best else None)


def leaderboard(**options: Any) -> pd.DataFrame:
    """The leaderboard as a DataFrame (options as `rank_runs`; no submission is written unless submission=True)."""
    return rank_runs(**{"submission": False, **options}).frame


@dataclass
class Blend:
    """An ensemble's stored record, its members and the runs skipped (with why)."""

    record: RunRecord
    members: list[RunRecord]
    skipped: list[str]


def ensemble(
    *,
    top: int = 3,
    by: str = "val_accuracy",
    study: str | None = None,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
) -> Blend:
    """Average the probabilities of the top runs that share the best run's validation set; a stored run."""
    from harness.ranking.ensemble import blend, select_members
    from harness.ranking.leaderboard import study_runs
    from harness.ranking.scope import on_dataset

    ws = _ws(where, data, results, storage)
    store = ws.store()
    scope = on_dataset(study_runs(store, study), str(ws.data_dir()) if ws.data else None)
    selection = select_members(scope.runs, top, by)
    return Blend(blend(store, ws.results, selection.members, by), selection.members, list(selection.skipped))


def report(
    *,
    study: str | None = None,
    html: bool = False,
    holdout: PathLike | None = None,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
) -> Path:
    """Write report.md (and report.html) with the plots and the verdict; its path."""
    from harness.reporting.report import write_report

    return write_report(_ws(where, data, results, storage), study=study, html=html, holdout=holdout)


def predict(
    model: PathLike,
    *,
    tta: int = 1,
    stain_normalise: bool = False,
    out: PathLike | None = None,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
) -> Path:
    """Predict the test set with a saved .keras model; the validated submission's path."""
    from harness.training.predict import predict_submission

    ws = _ws(where, data, results, storage)
    out_path = Path(out) if out else ws.submission_path
    return predict_submission(Path(model), ws, out_path, tta=tta, stain_normalise=stain_normalise)


def load_model(path: PathLike) -> Any:
    """A model.keras the harness wrote, uncompiled, in safe mode. A run's model.keras also loads with plain
    `keras.saving.load_model` (it holds the inference graph); this loads older and --save-optimizer ones too."""
    from harness.portable import load_model as load

    return load(path)


def export(
    run_id: str,
    *,
    format: str = "savedmodel",
    out: PathLike | None = None,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
) -> list[Path]:
    """A serving artefact of a stored run's model: a TensorFlow SavedModel folder or an .onnx file (one per fold).

    Default place: <run folder>/export/savedmodel or model.onnx. Where the backend or a package cannot do it, a
    HarnessError says so in one line.
    """
    from harness.portable import EXPORT_FORMATS, export_model
    from harness.portable import load_model as load

    if format not in EXPORT_FORMATS:
        raise HarnessError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    store = _ws(where, data, results, storage).store()
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


def scale(
    options: ScaleOptions | None = None,
    *,
    workers: int = 1,
    progress: bool = False,
    data: PathLike | None = None,
    results: PathLike | None = None,
    storage: str | None = None,
    where: Workspace | None = None,
    **settings: Any,
) -> list[int]:
    """Run a scaling study's points still due (workers=K: K local processes share them); the workers' exit codes.
    The study's settings are `options` or the keywords of `harness scale`'s flags (base=, multipliers=, seeds=...)."""
    from harness.scaling.study import ScaleOptions
    from harness.settings import build, check_names, flat_names
    from harness.tuning.workers import run_workers

    check_names(settings, flat_names(ScaleOptions), "scale setting")
    options = build(options or ScaleOptions(), settings)
    ws = _ws(where, data, results, storage)
    if workers > 1:
        return run_workers(scale_points, ws, options, workers)
    from harness.scaling.study import run_scale

    run_scale(ws, options, progress=progress)
    return []


def scale_points(ws: Workspace, options: ScaleOptions) -> None:
    """One worker's share of a scaling study (a module-level function: worker processes import it by name)."""
    from harness.scaling.study import run_scale

    run_scale(ws, options, progress=False)
