"""`harness search`: open or resume a study with Optuna or KerasTuner, run the trials still due, and sum it up."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from harness.config import AugmentConfig, RunSpec, TrainingConfig, check_study_name
from harness.errors import HarnessError
from harness.registry import SEARCH_SPACES
from harness.search.space import with_compute_cap
from harness.search.trials import StudySettings, TrialResult, TrialRunner, reconcile
from harness.store.runs import RunRecord, redact
from harness.terminal.progress import TrialClock
from harness.training.budget import budget_key, budget_of, budget_text
from harness.training.runner import Runner
from harness.workspace import Workspace

TUNERS = ("optuna", "keras-tuner")
DEFAULT_EPOCHS = 10  # the seed's shortest training (model 1); choose fewer with --epochs for a quick search
DEFAULT_BATCH_SIZE = 50  # the seed's generator batch


@dataclass(frozen=True)
class SearchOptions:
    """The flags of `harness search`. `trials` is the study's total, not this session's share."""

    trials: int = 50
    tuner: str = "optuna"
    algorithm: str | None = None  # KerasTuner only: hyperband, bayesian (default) or random
    space: str = "widen"
    study: str | None = None
    timeout_minutes: float | None = None
    epochs: int | None = None
    sample: int | None = None
    protocol: str = "seed"
    seed: int = 101
    batch_size: int | None = None
    folds: int = 1
    augment: AugmentConfig | None = None
    tta: int = 1
    precise_bn: int | None = None
    precision: str | None = None  # float32 unless given: see TrainingConfig.precision
    max_gmacs: float | None = None  # prune points costlier than this per image (CPU budgets)
    progress: bool = True
    pruner: Any = None  # an optuna pruner to use instead of Hyperband (experiments and tests)
    open_only: bool = False  # validate, create or load the study, run no trial (`--workers` does this first)


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

    @property
    def best(self) -> RunRecord | None:
        done = [r for r in self.runs if r.status == "complete" and r.val_auc is not None]
        return max(done, key=lambda r: float(r.val_auc or 0.0), default=None)

    @property
    def best_baseline(self) -> RunRecord | None:
        done = [r for r in self.baselines if r.status == "complete" and r.val_auc is not None]
        return max(done, key=lambda r: float(r.val_auc or 0.0), default=None)

    def memory(self) -> tuple[float, float, float] | None:
        """Resident memory after the first and last trial of this session, and its maximum."""
        rss = [r.rss_mb for r in self.results]
        return (rss[0], rss[-1], max(rss)) if rss else None

    def lines(self) -> list[str]:
        s = self.settings
        tuner = s.tuner + (f" ({s.algorithm})" if s.algorithm else " (TPE, Hyperband pruning)")
        ran = len(self.results)
        reference = budget_of(None, RunSpec("cnn", {}, s.training(), s.data).to_dict())
        lines = [
            f"study {self.study}: {tuner}, space {s.space}; {self.after} of {self.total} trials done "
            f"({ran} this session, {self.seconds / 60:.1f} min)" + (" - synthetic demo data" if self.synthetic else ""),
            f"budget per trial: {budget_text(reference)}, batch {s.batch_size}; storage {self.storage}",
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
        else:
            flags = f"--epochs {s.epochs}" + (f" --sample {s.sample}" if s.sample else "")
            flags += f" --protocol {s.protocol} --seed {s.seed}" + (f" --folds {s.folds}" if s.folds > 1 else "")
            flags += (f" --tta {s.tta}" if s.tta > 1 else "") + f" --precise-bn {s.precise_bn}"
            flags += f" --precision {s.precision}" if s.precision != "float32" else ""
            flags += " and this search's augmentation flags" if AugmentConfig(**s.augment).active else ""
            lines.append(f"no baseline at the same budget yet: harness run baselines {flags}")
        memory = self.memory()
        if memory is not None:
            rss = [r.rss_mb for r in self.results]
            spread = f", median {statistics.median(rss):.0f}" if len(rss) > 2 else ""
            lines.append(
                f"resident memory after each trial: first {memory[0]:.0f} MB, last {memory[1]:.0f} MB, "
                f"max {memory[2]:.0f} MB{spread} over {len(rss)} trials"
            )
        lines += self.notes
        lines.append(
            f"next: harness leaderboard --study {self.study} --by val_auc, then harness report --study {self.study}"
        )
        return lines


def trials_widens(entry: Any) -> str:
    """The architecture a space widens: named on never-built trials' records."""
    return str(entry.meta.get("widens", "cnn"))


def _latest_per_trial(runs: list[RunRecord]) -> list[RunRecord]:
    """A retried trial has several runs; its latest one stands for it."""
    latest: dict[Any, RunRecord] = {}
    for record in runs:  # oldest first
        latest[record.trial if record.trial is not None else record.run_id] = record
    return list(latest.values())


def _engine(workspace: Workspace, options: SearchOptions, study: str, algorithm: str | None) -> Any:
    if options.tuner == "optuna":
        from harness.search.optuna_engine import OptunaEngine

        return OptunaEngine(workspace.storage_url, study, options.pruner)
    from harness.search.keras_tuner_engine import KerasTunerEngine

    return KerasTunerEngine(workspace.results, study, algorithm or "bayesian")


def run_search(workspace: Workspace, options: SearchOptions) -> SearchSummary:
    """Run the trials a study still needs to reach `options.trials` in total; each trial is one recorded run."""
    started = time.perf_counter()
    if options.tuner not in TUNERS:
        raise HarnessError(f"--tuner must be one of {', '.join(TUNERS)}, got {options.tuner!r}")
    if options.trials < 1:
        raise HarnessError(f"--trials must be at least 1, got {options.trials}")
    if options.tuner == "optuna" and options.algorithm is not None:
        raise HarnessError("--algorithm chooses KerasTuner's algorithm; with --tuner optuna the search is TPE")
    entry = SEARCH_SPACES.get(options.space)
    algorithm = (options.algorithm or "bayesian") if options.tuner == "keras-tuner" else None
    study = options.study or default_study_name(options.space, options.tuner, algorithm)
    check_study_name(study)

    store = workspace.store()
    store.reap_dead()  # runs of killed processes end as failed before anything is counted
    others = {r.tuner for r in store.runs(study=study) if r.tuner and r.tuner != options.tuner}
    if others:
        raise HarnessError(f"study {study!r} belongs to {', '.join(sorted(others))}; name another with --study")

    engine = _engine(workspace, options, study, algorithm)
    wanted = {
        "space": options.space,
        "tuner": options.tuner,
        "algorithm": algorithm,
        "epochs": options.epochs or DEFAULT_EPOCHS,
        "sample": options.sample,
        "protocol": options.protocol,
        "seed": options.seed,
        "batch_size": options.batch_size or DEFAULT_BATCH_SIZE,
        "folds": options.folds,
        "augment": dataclasses.asdict(options.augment or AugmentConfig()),
        "tta": options.tta,
        "precise_bn": TrainingConfig.precise_bn if options.precise_bn is None else options.precise_bn,
        "precision": options.precision or TrainingConfig.precision,
        "max_gmacs": options.max_gmacs,
    }
    optional = ("epochs", "sample", "batch_size", "algorithm", "augment", "precise_bn", "precision", "max_gmacs")
    given = {k for k in optional if getattr(options, k) is not None}
    explicit = {"space", "tuner", "protocol", "seed", "folds", "tta"} | given
    settings = StudySettings(**reconcile(study, wanted, explicit, engine.stored_settings()))
    settings.data  # noqa: B018 - validates protocol and sample before any work (raises ConfigError)

    before = engine.open(settings.as_dict(), entry.builder, options.trials)
    results: list[TrialResult] = []
    synthetic = False
    if before < options.trials and not options.open_only:
        dataset = workspace.dataset(progress=options.progress)
        synthetic = dataset.synthetic
        runner = Runner(dataset, store, workspace.results, progress=options.progress, console=workspace.console)
        space = with_compute_cap(entry.builder, settings.max_gmacs)
        trials = TrialRunner(runner, space, trials_widens(entry), settings, study, workspace.console)
        runner.overall = trials.clock = TrialClock(options.trials, engine.counted)  # ETA over the study's trials
        workspace.console.print(
            f"[bold]study {study}[/bold]: {before} of {options.trials} trials done, running up to "
            f"{options.trials - before} ({settings.tuner}, space {settings.space}, {settings.epochs} epochs each)",
            highlight=False,
        )
        timeout_s = options.timeout_minutes * 60 if options.timeout_minutes else None
        engine.run(trials, options.trials, timeout_s)
        results = trials.results
    after = engine.counted()
    notes = []
    if after < options.trials and results and options.timeout_minutes:
        notes.append(f"stopped starting trials after --timeout {options.timeout_minutes:g} min; rerun to continue")
    runs = [r for r in store.runs(study=study) if r.origin == "search"]
    reference = RunSpec(trials_widens(entry), {}, settings.training(), settings.data).to_dict()
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
    )
