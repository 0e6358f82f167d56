"""`harness search`: open or resume a study with Optuna or KerasTuner, run the trials still due, and sum it up.

Over 350 lines because opening, resuming, the workers and the summary all read one study's settings; each tuner's
engine, the clock and the storage are modules of their own."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.clock import Deadline, minutes_text
from harness.config import DataConfig, RunSpec, TrainingConfig, check_study_name
from harness.errors import HarnessError
from harness.registry import SEARCH_SPACES
from harness.settings import check_names, check_seconds, flag_of, knobs, nested
from harness.store.runs import RunRecord, redact
from harness.terminal.progress import TrialClock
from harness.training.budget import budget_key, budget_of, budget_text
from harness.training.runner import Runner
from harness.tuning.space import first_point, with_compute_cap
from harness.tuning.study_settings import StudySettings, reconcile
from harness.tuning.trials import TrialResult, TrialRunner

if TYPE_CHECKING:
    from harness.tuning.clocked_search import ClockedOutcome
from harness.workspace import Workspace


@dataclass(frozen=True, init=False)
class SearchOptions:
    """What one session of `harness search` is asked: the session's own options, and the study settings given.

    Settings are keyword arguments named as StudySettings.names() (space, tuner, epochs, sample, dihedral, ...);
    one left out (or None) takes the stored study's value when it resumes one, else the default.
    `trials` is the study's total, not this session's share. Durations are seconds: `deadline` is the whole
    session's clock (harness.clock.Deadline, started by the caller), `stop_starting_after` stops starting trials.
    """

    trials: int = 50
    study: str | None = None
    stop_starting_after: float | None = None  # seconds: no trial starts after this (--timeout)
    deadline: Deadline | None = None  # the whole command's clock (--deadline): the search ends within it
    progress: bool = True
    pruner: Any = None  # an optuna pruner to use instead of Hyperband (experiments and tests)
    open_only: bool = False  # validate, create or load the study, run no trial (`--workers` does this first)
    workers: int = 1  # local processes sharing --trials (Optuna only): see search.workers
    keep_checkpoints: bool = False  # keep each finished trial's per-epoch checkpoint (training.checkpoint)
    endgame: bool = True  # a clocked session ends with the endgame (False: a worker whose parent runs it)
    given: dict[str, Any] = field(default_factory=dict)  # the study settings asked for, by flat name

    def __init__(
        self,
        trials: int = 50,
        study: str | None = None,
        stop_starting_after: float | None = None,
        progress: bool = True,
        pruner: Any = None,
        open_only: bool = False,
        workers: int = 1,
        given: dict[str, Any] | None = None,
        keep_checkpoints: bool = False,
        deadline: Deadline | None = None,
        endgame: bool = True,
        **settings: Any,
    ) -> None:
        values = {**(given or {}), **settings}
        check_names(values, StudySettings.names())
        check_seconds(stop_starting_after, "stop_starting_after")
        session: dict[str, Any] = {"trials": trials, "study": study, "stop_starting_after": stop_starting_after}
        session |= {"progress": progress, "pruner": pruner, "open_only": open_only, "workers": workers}
        session |= {"keep_checkpoints": keep_checkpoints, "deadline": deadline, "endgame": endgame}
        for name, value in session.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "given", {k: v for k, v in values.items() if v is not None})

    def __getattr__(self, name: str) -> Any:  # options.tuner, options.epochs: a setting as given (None: not given)
        if name.startswith("_") or name not in StudySettings.names():
            raise AttributeError(name)
        return self.__dict__.get("given", {}).get(name)


def default_study_name(space: str, tuner: str, algorithm: str | None) -> str:
    return f"{space}-{tuner}" + (f"-{algorithm}" if tuner == "keras-tuner" and algorithm else "")


@dataclass(frozen=True)
class SearchSummary:
    """What a session of `harness search` did, and where the study stands."""

    study: str
    settings: StudySettings
    storage: str
    total: int
    before: int
    after: int
    results: list[TrialResult]
    runs: list[RunRecord]
    baselines: list[RunRecord]
    seconds: float
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    worker_codes: list[int] = field(default_factory=list)  # --workers: each process's exit code
    clocked: str = ""  # --deadline: the trials' budget in words (rungs of virtual epochs)

    @property
    def best(self) -> RunRecord | None:
        done = [r for r in self.runs if r.status == "complete" and r.val_auc is not None]
        return max(done, key=lambda r: float(r.val_auc or 0.0), default=None)

    @property
    def best_baseline(self) -> RunRecord | None:
        done = [r for r in self.baselines if r.status == "complete" and r.val_auc is not None]
        return max(done, key=lambda r: float(r.val_auc or 0.0), default=None)

    def batch_text(self) -> str:
        """The trials' batch sizes as their specs hold them (a space may choose its own), else the study's."""
        sizes = sorted({int((r.spec or {}).get("training", {}).get("batch_size") or 0) for r in self.runs} - {0})
        if not sizes:
            return f"batch {self.settings.batch_size}"
        return f"batch {sizes[0]}" if len(sizes) == 1 else f"batch {sizes[0]} to {sizes[-1]} (the space chooses)"

    def memory(self) -> tuple[float, float, float] | None:
        """Resident memory after the first and last trial of this session, and its maximum."""
        rss = [r.rss_mb for r in self.results]
        return (rss[0], rss[-1], max(rss)) if rss else None

    def lines(self) -> list[str]:
        s = self.settings
        tuner = s.tuner + (f" ({s.algorithm})" if s.algorithm else " (TPE, Hyperband pruning)")
        ran = len(self.results)
        reference = budget_of(None, RunSpec("cnn", {}, s.training, s.data).to_dict())
        lines = [
            f"study {self.study}: {tuner}, space {s.space}; {self.after} of {self.total} trials done "
            f"({ran} this session, {self.seconds / 60:.1f} min)" + (" - synthetic demo data" if self.synthetic else ""),
            (f"budget per trial: {self.clocked}" if self.clocked else f"budget per trial: {budget_text(reference)}")
            + f", {self.batch_text()}; storage {self.storage}",
        ]
        counts: dict[str, int] = {}
        for record in _latest_per_trial(self.runs):
            counts[record.status] = counts.get(record.status, 0) + 1
        if counts:
            lines.append("trials: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        best = self.best
        if best is not None:
            lines.append(
                f"best trial #{best.trial}: val AUC {best.val_auc:.4f}, val acc {best.val_accuracy:.4f}, "
                f"{(best.parameters or 0) / 1e6:.2f}M parameters (run {best.run_id})"
            )
        baseline = self.best_baseline
        if baseline is not None:
            lines.append(
                f"best baseline at the same budget: {baseline.architecture} val AUC {baseline.val_auc:.4f}, "
                f"val acc {baseline.val_accuracy:.4f} (run {baseline.run_id})"
            )
        elif not self.clocked:  # on a clock the trials' budgets are rungs: no fixed budget for a baseline to match
            lines.append(f"no baseline at the same budget yet: harness run baselines {baselines_flags(s)}".rstrip())
        memory = self.memory()
        if memory is not None:
            rss = [r.rss_mb for r in self.results]
            spread = f", median {statistics.median(rss):.0f}" if len(rss) > 2 else ""
            lines.append(
                f"resident memory after each trial: first {memory[0]:.0f} MB, last {memory[1]:.0f} MB, "
                f"max {memory[2]:.0f} MB{spread} over {len(rss)} trial{'s' if len(rss) != 1 else ''}"
            )
        lines += self.notes
        lines.append(
            f"next: harness leaderboard --study {self.study} --by val_auc, then harness report --study {self.study}"
        )
        return lines


def baselines_flags(settings: StudySettings) -> str:
    """The flags that make `harness run baselines` train at this study's budget: each budget knob whose value
    differs from a baseline's own default (its registered training, else the class's)."""
    from harness.registry import ARCHITECTURES

    names = ARCHITECTURES.names(baseline=True)
    own = [ARCHITECTURES.get(name).meta.get("training") or TrainingConfig() for name in names] or [TrainingConfig()]
    flags: list[str] = []
    for value, defaults in ((settings.training, own), (settings.data, [DataConfig()])):
        for f in knobs(type(value)):
            if not (f.metadata["budget"] and f.metadata["cli"]):
                continue
            inner = nested(type(value), f)
            if inner is None:
                if any(getattr(d, f.name) != getattr(value, f.name) for d in defaults):
                    flags.append(f"{flag_of(f)} {getattr(value, f.name)}")
                continue
            for g in knobs(inner):
                mine = getattr(getattr(value, f.name), g.name)
                if g.metadata["cli"] and any(getattr(getattr(d, f.name), g.name) != mine for d in defaults):
                    flags.append(flag_of(g) if mine is True else f"{flag_of(g)} {mine}")
    return " ".join(flags)


def trials_widens(entry: Any) -> str:
    """The architecture a space widens: named on never-built trials' records."""
    return str(entry.meta.get("widens", "cnn"))


def _latest_per_trial(runs: list[RunRecord]) -> list[RunRecord]:
    """A retried trial has several runs; its latest one stands for it."""
    latest: dict[Any, RunRecord] = {}
    for record in runs:  # oldest first
        latest[record.trial if record.trial is not None else record.run_id] = record
    return list(latest.values())


def _engine(workspace: Workspace, pruner: Any, study: str, settings: StudySettings) -> Any:
    if settings.tuner == "optuna":
        from harness.tuning.optuna_engine import OptunaEngine

        return OptunaEngine(workspace.storage_url, study, pruner)
    from harness.tuning.keras_tuner_engine import KerasTunerEngine

    return KerasTunerEngine(workspace.results, study, settings.algorithm or "bayesian")


def run_search(workspace: Workspace, options: SearchOptions) -> SearchSummary:
    """Run the trials a study still needs to reach `options.trials` in total; each trial is one recorded run."""
    started = time.perf_counter()
    if options.trials < 1:
        raise HarnessError(f"--trials must be at least 1, got {options.trials}")
    asked = StudySettings.from_dict(options.given)  # checks every setting before any work
    entry = SEARCH_SPACES.get(asked.space)
    study = options.study or default_study_name(asked.space, asked.tuner, asked.algorithm)
    check_study_name(study)

    store = workspace.store()
    store.reap_dead()  # runs of killed processes end as failed before anything is counted
    others = {r.tuner for r in store.runs(study=study) if r.tuner and r.tuner != asked.tuner}
    if others:
        raise HarnessError(f"study {study!r} belongs to {', '.join(sorted(others))}; name another with --study")

    engine = _engine(workspace, options.pruner, study, asked)
    settings = reconcile(study, options.given, engine.stored_settings())
    entry = SEARCH_SPACES.get(settings.space)  # a resumed study's own space

    space = with_compute_cap(entry.builder, settings.max_gmacs)
    first = first_point(settings.space, space, entry.meta.get("first"))
    before = engine.open(settings.as_dict(), entry.builder, options.trials, first)
    results: list[TrialResult] = []
    notes: list[str] = []
    clock_words = ""
    synthetic = False
    if before < options.trials and not options.open_only:
        dataset = workspace.dataset(progress=options.progress)
        synthetic = dataset.synthetic
        runner = Runner(dataset, store, workspace.results, progress=options.progress, console=workspace.console)
        runner.keep_checkpoints = options.keep_checkpoints
        trials = TrialRunner(runner, space, trials_widens(entry), settings, study, workspace.console)
        runner.overall = trials.clock = TrialClock(options.trials, engine.counted)  # ETA over the study's trials
        workspace.console.print(
            f"[bold]study {study}[/bold]: {before} of {options.trials} trials done, running up to "
            f"{options.trials - before} ({settings.tuner}, space {settings.space}, "
            + (
                f"on a {minutes_text(options.deadline.seconds)} clock)"
                if options.deadline
                else f"{settings.epochs} epochs each)"
            )
            + ("; the first is the space's starting point" if first is not None and before == 0 else ""),
            highlight=False,
        )
        if options.deadline is not None:
            clocked = run_clocked(workspace, options, engine, trials, settings, entry, first)
            clock_words = clocked.budget
            if clocked.endgame is not None:
                notes.append(clocked.endgame.summary())
        else:
            engine.run(trials, options.trials, options.stop_starting_after)
        results = trials.results
    after = engine.counted()
    if after < options.trials and results and options.stop_starting_after and options.deadline is None:
        notes.append(
            f"stopped starting trials after --timeout {options.stop_starting_after / 60:g} min; rerun to continue"
        )
    runs = [r for r in store.runs(study=study) if r.origin == "search"]
    reference = RunSpec(trials_widens(entry), {}, settings.training, settings.data).to_dict()
    key = budget_of(runs[-1].dataset, reference) if runs else None
    baselines = [r for r in store.runs() if r.origin == "baseline" and key is not None and budget_key(r) == key]
    return SearchSummary(
        study=study,
        settings=settings,
        storage=redact(workspace.storage_url),
        total=options.trials,
        before=before,
        after=after,
        results=results,
        runs=runs,
        baselines=baselines,
        seconds=time.perf_counter() - started,
        synthetic=synthetic or any(r.synthetic for r in runs),
        notes=notes,
        clocked=clock_words,
    )


def run_clocked(
    workspace: Workspace,
    options: SearchOptions,
    engine: Any,
    trials: TrialRunner,
    settings: StudySettings,
    entry: Any,
    first: dict[str, Any] | None,
) -> ClockedOutcome:
    """A session on `options.deadline`: Optuna by the clocked policy (tuning.clocked_search), KerasTuner by its own
    algorithm with the clock checked inside every trial; both keep the best submission so far and end with the
    endgame."""
    from harness.ranking.keeper import SubmissionKeeper
    from harness.terminal.progress import DeadlineClock
    from harness.tuning.clocked_search import ClockedSearch
    from harness.tuning.space import portfolio_points

    deadline = options.deadline
    assert deadline is not None
    console = workspace.console

    def say(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    trials.keeper = SubmissionKeeper(workspace.results, say)
    trials.clock = trials.runner.overall = DeadlineClock(deadline)
    if settings.tuner == "optuna":
        from harness.tuning.optuna_engine import sampler_for

        study = optuna_study(engine, sampler_for(settings.seed, len(engine.study.trials)))
        portfolio = portfolio_points(settings.space, trials.space, entry.meta.get("portfolio"), first)
        search = ClockedSearch(
            trials, study, workspace.storage_url, deadline, options.trials, portfolio, first,
            run_endgame=options.endgame, keep_checkpoints=options.keep_checkpoints,
        )  # fmt: skip
        return search.run()
    return keras_tuner_on_a_clock(engine, trials, options, deadline, say)


def optuna_study(engine: Any, sampler: Any) -> Any:
    import optuna

    return optuna.load_study(study_name=engine.study_name, storage=engine.storage, sampler=sampler)


def keras_tuner_on_a_clock(
    engine: Any, trials: TrialRunner, options: SearchOptions, deadline: Deadline, say: Any
) -> ClockedOutcome:
    """KerasTuner's own algorithm on the clock: a trial stops inside an epoch when only the endgame's reserve is
    left, no trial starts that its predicted time cannot fit, then the endgame (TTA and a greedy ensemble)."""
    from harness.tuning.clocked_search import ClockedOutcome
    from harness.tuning.endgame import predict_reserve, run_endgame

    runner = trials.runner
    outcome = ClockedOutcome()

    def reserve() -> float:
        done = [r for r in runner.store.runs(study=engine.study) if r.status == "complete"]
        speed = max((float(r.images_per_second or 0) for r in done), default=0.0)
        n_val = max((int(r.n_val or 0) for r in done), default=0)
        return predict_reserve(n_val, len(runner.dataset.test), speed, deadline)

    runner.deadline, runner.reserve = deadline, reserve
    engine.clock, engine.reserve = deadline, reserve
    engine.run(trials, options.trials, options.stop_starting_after)
    runner.reserve = None
    done = [r for r in runner.store.runs(study=engine.study) if r.status == "complete" and r.origin == "search"]
    if not done:
        say(f"study {engine.study}: no trial finished before the clock ran out; no submission written")
        return outcome
    best = max(done, key=lambda r: float(r.val_auc or 0.0))
    others = [r for r in done if r.run_id != best.run_id]
    assert trials.keeper is not None
    outcome.endgame = run_endgame(runner, best, others, deadline, trials.keeper, say, 0.0, 0.0)
    return outcome
