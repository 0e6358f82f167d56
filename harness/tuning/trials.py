"""What both engines share: study settings, sample -> RunSpec -> Runner.run, never-built trials, memory per trial."""

from __future__ import annotations

import dataclasses
import gc
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
from rich.console import Console
from rich.markup import escape

from harness.config import Origin, RunSpec
from harness.ranking.keeper import SubmissionKeeper
from harness.run_records import new_run_id, record_never_built
from harness.store.runs import RunRecord
from harness.terminal.consoles import fitted
from harness.terminal.progress import Overall, TrialClock
from harness.training.callbacks import tensorboard_folder
from harness.training.runner import Runner
from harness.tuning.space import Sample, Suggest
from harness.tuning.study_settings import StudySettings, reconcile  # noqa: F401 - reconcile: re-exported
from harness.tuning.tensorboard_hparams import log_trial


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
    clock: Overall | None = None  # trials done of the total (or the --deadline's clock): appended to each trial's line
    keeper: SubmissionKeeper | None = None  # --deadline: each trial that beats the submission so far replaces it

    def spec(self, sample: Sample, number: int, epochs: int | None = None) -> RunSpec:
        training = self.settings.trial_training(epochs, sample.batch_size, optimizer=sample.optimizer)
        if sample.augment is not None:  # a space that searches over augmentation (search_spaces/augment.py)
            training = dataclasses.replace(training, augment=sample.augment)
        if sample.recipe:  # a space that searches over the training recipe (search_spaces/modern.py)
            training = dataclasses.replace(training, **sample.recipe)
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
        run_id = run_id or new_run_id(spec.architecture)
        try:
            return self.runner.run(
                spec, callbacks=callbacks, hyperparameters=params, pruned_exceptions=pruned_exceptions, run_id=run_id
            )
        finally:  # a pruned trial too: TensorBoard's HParams dashboard shows every trial that trained
            if spec.training.tensorboard is not None:
                root = tensorboard_folder(spec.training.tensorboard, self.runner.results_dir)
                log_trial(root, self.runner.store, run_id, params, self.console)

    def record_invalid(self, number: int, hyperparameters: dict[str, Any], reason: str) -> RunRecord:
        """Store a trial whose combination must never be built as a pruned run that says why."""
        spec = RunSpec(
            self.widens,
            {},
            self.settings.training,
            self.settings.data,
            self.settings.seed,
            Origin(kind="search", study=self.study, trial=number, tuner=self.settings.tuner),
        )
        data, chosen = self.runner.dataset, hyperparameters
        return record_never_built(
            self.runner.store, spec, reason, dataset=data.root, synthetic=data.synthetic, hyperparameters=chosen
        )

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
        if isinstance(self.clock, TrialClock):
            self.clock.trial_finished()
        colour = {"complete": "green", "pruned": "yellow"}.get(status, "red")
        parts = [f"{self.study} #{number} {status}"]
        parts += [f"val AUC {result.val_auc:.4f}"] if result.val_auc is not None else []
        parts += [f"{result.parameters / 1e6:.2f}M params"] if result.parameters else []
        parts += [f"{result.seconds:.0f} s", f"RSS {result.rss_mb:.0f} MB"]
        parts += [f"({note})"] if note else []
        parts += [self.clock.text()] if self.clock is not None else []
        # One line per trial: whole in a log; on a terminal, the last parts are left out rather than wrapped.
        line = escape(fitted(self.console, parts))
        head = escape(f"{self.study} #{number} ")
        line = line.replace(f"{head}{status}", f"[bold]{head}[/bold][{colour}]{status}[/{colour}]", 1)
        self.console.print(line, highlight=False, soft_wrap=not self.console.is_terminal)
        if record is not None and status == "complete" and self.keeper is not None:
            self.offer(record)

    def offer(self, record: RunRecord) -> None:
        """A finished trial that beats the submission so far becomes it (its test set predicted now if it was not)."""
        from harness.ranking.leaderboard import val_key

        assert self.keeper is not None
        key = val_key(record)
        if not self.keeper.better(record, key)[0]:
            return
        if not record.submission or not Path(record.submission).is_file():
            record = self.runner.predict_test_set(record.run_id)
        self.keeper.write(record, key)
