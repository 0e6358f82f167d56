"""What both engines share: study settings, sample -> RunSpec -> Runner.run, never-built trials, memory per trial."""

from __future__ import annotations

import dataclasses
import gc
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
from rich.console import Console

from harness.config import AugmentConfig, DataConfig, OptimizerConfig, Origin, RunSpec, TrainingConfig
from harness.errors import HarnessError
from harness.search.space import Sample, Suggest
from harness.store.runs import RunRecord
from harness.terminal.progress import TrialClock
from harness.training.runner import Runner, new_run_id

# The flags a study keeps for its whole life: changing one mid-study would mix incomparable trials.
SETTING_FLAGS = {
    "space": "--space",
    "tuner": "--tuner",
    "algorithm": "--algorithm",
    "epochs": "--epochs",
    "sample": "--sample",
    "protocol": "--protocol",
    "seed": "--seed",
    "batch_size": "--batch-size",
    "folds": "--folds",
    "augment": "--augment/--dihedral/--brightness/--contrast/--hue/--crop",
    "tta": "--tta",
    "precise_bn": "--precise-bn",
    "precision": "--precision",
    "max_gmacs": "--max-gmacs",
}


@dataclass(frozen=True)
class StudySettings:
    """A study's fixed settings: its space and tuner, and the data and training budget of every trial."""

    space: str
    tuner: str
    algorithm: str | None
    epochs: int
    sample: int | None
    protocol: str
    seed: int
    batch_size: int
    folds: int = 1
    augment: dict[str, Any] = field(default_factory=dict)  # AugmentConfig's fields; {} is no augmentation
    tta: int = 1
    precise_bn: int = TrainingConfig.precise_bn
    precision: str = TrainingConfig.precision
    max_gmacs: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def data(self) -> DataConfig:
        return DataConfig(protocol=self.protocol, sample=self.sample, seed=self.seed, folds=self.folds)

    def training(
        self, epochs: int | None = None, batch_size: int | None = None, optimizer: OptimizerConfig | None = None
    ) -> TrainingConfig:
        """Every trial's training recipe; a space may choose the optimiser and the batch size."""
        return TrainingConfig(
            epochs=epochs or self.epochs,
            batch_size=batch_size or self.batch_size,
            optimizer=optimizer or OptimizerConfig(),
            augment=AugmentConfig(**self.augment),
            tta=self.tta,
            precise_bn=self.precise_bn,
            precision=self.precision,
        )


def reconcile(study: str, wanted: dict[str, Any], explicit: set[str], stored: dict[str, Any] | None) -> dict[str, Any]:
    """Settings for this session: a resumed study keeps its own; a flag that contradicts one is an error."""
    if not stored:
        return wanted
    clashes = [
        f"{SETTING_FLAGS.get(key, key)} {stored[key]}"
        for key in SETTING_FLAGS
        if key in explicit and key in stored and wanted.get(key) != stored[key]
    ]
    if clashes:
        raise HarnessError(
            f"study {study!r} was started with {', '.join(clashes)}; rerun with those values to continue it, "
            "or name a new study with --study"
        )
    return {**wanted, **{k: v for k, v in stored.items() if k in SETTING_FLAGS}}


def resident_mb() -> float:
    """This process's resident memory now (Linux VmRSS); elsewhere its peak so far."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class TrialResult:
    """One trial as this session saw it end."""

    number: int
    status: str  # the run's status: complete, pruned or failed
    run_id: str | None
    val_auc: float | None
    parameters: int | None
    seconds: float
    rss_mb: float
    note: str = ""


@dataclass
class TrialRunner:
    """Turns a tuner's trial into one recorded run, the same way for every engine."""

    runner: Runner
    space: Callable[[Suggest], Sample]
    widens: str
    settings: StudySettings
    study: str
    console: Console
    results: list[TrialResult] = field(default_factory=list)
    clock: TrialClock | None = None  # trials done of the total, elapsed, ETA: appended to each trial's line

    def spec(self, sample: Sample, number: int, epochs: int | None = None) -> RunSpec:
        training = self.settings.training(epochs, sample.batch_size, optimizer=sample.optimizer)
        if sample.augment is not None:  # a space that searches over augmentation (search_spaces/augment.py)
            training = dataclasses.replace(training, augment=sample.augment)
        origin = Origin(kind="search", study=self.study, trial=number, tuner=self.settings.tuner)
        kwargs = dict(sample.arch_kwargs)
        return RunSpec(sample.architecture, kwargs, training, self.settings.data, self.settings.seed, origin)

    def run(
        self,
        sample: Sample,
        number: int,
        hyperparameters: dict[str, Any],
        *,
        epochs: int | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        pruned_exceptions: tuple[type[BaseException], ...] = (),
        run_id: str | None = None,
    ) -> RunRecord:
        spec = self.spec(sample, number, epochs)
        params = {**hyperparameters, "derived": sample.derived} if sample.derived else dict(hyperparameters)
        return self.runner.run(
            spec, callbacks=callbacks, hyperparameters=params, pruned_exceptions=pruned_exceptions, run_id=run_id
        )

    def record_invalid(self, number: int, hyperparameters: dict[str, Any], reason: str) -> RunRecord:
        """Store a trial whose combination must never be built as a pruned run that says why."""
        store, dataset = self.runner.store, self.runner.dataset
        spec = RunSpec(
            self.widens,
            {},
            self.settings.training(),
            self.settings.data,
            self.settings.seed,
            Origin(kind="search", study=self.study, trial=number, tuner=self.settings.tuner),
        )
        run_id = new_run_id(self.widens)
        store.start(
            run_id,
            architecture=self.widens,
            origin="search",
            study=self.study,
            trial=number,
            tuner=self.settings.tuner,
            spec=spec.to_dict(),
            hyperparameters=dict(hyperparameters),
            dataset=str(dataset.root),
            synthetic=dataset.synthetic,
            backend=keras.config.backend(),
        )
        store.update(run_id, status="pruned", epochs_run=0, error=f"invalid configuration, never built: {reason}")
        return store.get(run_id)

    def finish(self, number: int, record: RunRecord | None, status: str, started: float, note: str = "") -> None:
        """Measure memory after the trial (the runner has cleared the Keras session) and print one line."""
        gc.collect()
        result = TrialResult(
            number=number,
            status=status,
            run_id=record.run_id if record else None,
            val_auc=record.val_auc if record and status == "complete" else None,
            parameters=record.parameters if record else None,
            seconds=time.perf_counter() - started,
            rss_mb=resident_mb(),
            note=note,
        )
        self.results.append(result)
        if self.clock is not None:
            self.clock.trial_finished()
        colour = {"complete": "green", "pruned": "yellow"}.get(status, "red")
        score = f"val AUC {result.val_auc:.4f}  " if result.val_auc is not None else ""
        size = f"{result.parameters / 1e6:.2f}M params  " if result.parameters else ""
        self.console.print(
            f"[bold]{self.study} #{number}[/bold] [{colour}]{status}[/{colour}]  {score}{size}"
            f"{result.seconds:.0f} s  RSS {result.rss_mb:.0f} MB"
            + (f"  ({note})" if note else "")
            + (f"  {self.clock.text()}" if self.clock is not None else ""),
            highlight=False,
            soft_wrap=True,  # one line per trial, whatever the width
        )
