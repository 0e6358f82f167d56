"""KerasTuner engine: a `keras_tuner.Tuner` whose `run_trial` hands each trial to `Runner.run`."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import keras_tuner
from keras_tuner import errors as kt_errors
from keras_tuner.src import config as kt_config

from harness.atomic import write_text
from harness.errors import HarnessError
from harness.run_records import new_run_id
from harness.store.runs import RunRecord
from harness.training.checkpoint import checkpoint_bytes, continue_from, delete_checkpoints
from harness.tuning.space import InvalidConfiguration, KerasTunerSuggest, SpaceFunction, declare, keras_tuner_values
from harness.tuning.trials import TrialRunner

ALGORITHMS = ("hyperband", "bayesian", "random")
SETTINGS_FILE = "harness-study.json"
INITIAL_POINTS = 10  # random trials before the Gaussian process (KerasTuner's default is 3 per parameter)
HYPERBAND_FACTOR = 3
# A trial Hyperband promotes goes on from its parent's checkpoint; False retrains it from scratch, as the harness did
# before (kept to measure what continuing saves).
CONTINUE_PROMOTED = True


class _TimeUp(Exception):
    """--timeout passed: start no new trial."""


class SpaceHyperModel(keras_tuner.HyperModel):
    """Declares a space's parameters to the oracle; never builds a model (the runner does)."""

    def __init__(self, space: SpaceFunction) -> None:
        super().__init__(name="harness_space")
        self.space = space

    def build(self, hp: keras_tuner.HyperParameters) -> None:
        declare(self.space, hp)


class HarnessTuner(keras_tuner.Tuner):
    """A KerasTuner tuner that delegates every trial to the harness runner (through `engine.run_one`)."""

    def __init__(self, engine: KerasTunerEngine, oracle: keras_tuner.Oracle, space: SpaceFunction) -> None:
        self.engine = engine
        super().__init__(
            oracle=oracle,
            hypermodel=SpaceHyperModel(space),
            directory=str(engine.directory),
            project_name=engine.study,
            overwrite=False,
        )

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        return self.engine.run_one(trial)

    def pre_create_trial(self) -> None:
        # Like Optuna's timeout, checked after a trial: a session always runs one (else a loaded machine runs none).
        if self.engine.deadline is not None and self.engine.started and time.monotonic() >= self.engine.deadline:
            raise _TimeUp
        # --deadline: no trial starts that the clock, less the endgame's reserve, cannot hold (its predicted time:
        # the median of this session's trials so far).
        clock = self.engine.clock
        if clock is not None and self.engine.started:
            seconds = sorted(self.engine.trial_seconds)[len(self.engine.trial_seconds) // 2]
            if clock.left() - self.engine.reserve() < seconds:
                raise _TimeUp

    def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        self.engine.after_trial(trial)

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
        """Nothing to do: the runner saves each trial's model under results/runs/ (and, for a trial Hyperband may
        promote, keeps its checkpoint: see KerasTunerEngine.run_one)."""


def _start_with(oracle: keras_tuner.Oracle, first: dict[str, Any]) -> None:
    """Make a new project's first trial `first`, whatever the oracle: its own proposal (with Hyperband's round
    bookkeeping) is kept and the space's values are overridden; later trials are the oracle's own."""
    propose = oracle.populate_space

    def populate_space(trial_id: str) -> dict[str, Any]:
        response = propose(trial_id)
        if not oracle.trials and response.get("status") == keras_tuner.engine.trial.TrialStatus.RUNNING:
            values = {**response["values"], **keras_tuner_values(first, oracle.hyperparameters)}
            response = {**response, "values": values}
        return response

    oracle.populate_space = populate_space  # type: ignore[method-assign]


class KerasTunerEngine:
    """One KerasTuner project, opened for one session of `harness search`.

    The oracle (random, Bayesian or Hyperband) only proposes values; the space is declared through the `Suggest`
    adapter, and the model is built, trained and recorded by the harness. The project lives in
    `<results>/keras_tuner/<study>/` and is reloaded (`overwrite=False`), so rerunning the same command continues it:
    `max_trials` counts every trial started, and a trial cut off by a killed process is retried by the reloaded oracle.
    """

    def __init__(self, results_dir: Path, study: str, algorithm: str) -> None:
        if algorithm not in ALGORITHMS:
            raise HarnessError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        self.directory = Path(results_dir) / "keras_tuner"
        self.study = study
        self.algorithm = algorithm
        self.project = self.directory / study
        self.tuner: HarnessTuner | None = None
        self.trials: TrialRunner | None = None
        self.deadline: float | None = None
        self.clock: Any = None  # --deadline (harness.clock.Deadline), and the seconds it keeps for the endgame
        self.reserve: Any = lambda: 0.0
        self.trial_seconds: list[float] = []
        self.started = 0  # trials this session has started
        self.max_epochs = 0
        self.total = 0
        self._last: tuple[RunRecord, str, str, float] | None = None
        self.continued: list[tuple[int, int]] = []  # this session's promoted trials: (epochs trained, epochs skipped)
        self._kept: dict[str, int] = {}  # run folder -> bytes of the checkpoint kept there for a promotion
        self.peak_kept = (0, 0)  # the most checkpoints kept at once for promotions: (count, bytes)

    def stored_settings(self) -> dict[str, Any] | None:
        path = self.project / SETTINGS_FILE
        if not path.is_file():
            if (self.project / "oracle.json").exists():
                raise HarnessError(f"{self.project} is a KerasTuner project not started by harness search")
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{path}: unreadable study settings ({exc}); move the folder aside") from None

    def open(
        self, settings: dict[str, Any], space: SpaceFunction, total: int, first: dict[str, Any] | None = None
    ) -> int:
        """Create or reload the project (a new one tries `first` as its first trial); return the trials ended."""
        if not (self.project / SETTINGS_FILE).is_file():
            write_text(self.project / SETTINGS_FILE, json.dumps(settings, indent=2))
        self.max_epochs, self.total = int(settings["epochs"]), total
        objective = keras_tuner.Objective("val_auc", direction="max")
        # None: never stop the search for consecutive failures; each one is recorded and the search goes on.
        common: dict[str, Any] = {"objective": objective, "seed": settings["seed"]}
        common["max_consecutive_failed_trials"] = None
        if self.algorithm == "random":
            oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=total, **common)
        elif self.algorithm == "bayesian":
            points = min(INITIAL_POINTS, total)
            oracle = keras_tuner.oracles.BayesianOptimizationOracle(
                max_trials=total, num_initial_points=points, **common
            )
        else:
            oracle = keras_tuner.oracles.HyperbandOracle(
                max_epochs=settings["epochs"], factor=HYPERBAND_FACTOR, hyperband_iterations=None, **common
            )
            oracle.max_trials = total  # Hyperband has no such argument, but the base oracle honours the attribute
        with contextlib.redirect_stdout(sys.stderr):  # KerasTuner prints; stdout is for the command's result
            try:
                self.tuner = HarnessTuner(self, oracle, space)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise HarnessError(f"cannot reload KerasTuner project {self.project}: {exc}") from None
        if first is not None:
            _start_with(self.tuner.oracle, first)
        return self.counted()

    def counted(self) -> int:
        assert self.tuner is not None
        oracle = self.tuner.oracle
        # A reloaded oracle queues the trial of a killed process for retry (a private list): not yet ended.
        return len(oracle.trials) - len(oracle._retry_queue) - len(oracle.ongoing_trials)

    def run(self, trials: TrialRunner, total: int, timeout_s: float | None) -> None:
        assert self.tuner is not None
        self.trials = trials
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        kt_config.DEBUG = False  # no traceback per failed trial: the run store and error.txt keep the error
        with contextlib.redirect_stdout(sys.stderr):
            try:
                self.tuner.search(verbose=0)
            except _TimeUp:
                pass
            except kt_errors.FatalError as exc:
                if isinstance(exc.__cause__, HarnessError):
                    raise exc.__cause__ from None
                raise
        self._tidy()

    def run_one(self, trial: keras_tuner.engine.trial.Trial) -> dict[str, float]:
        """One KerasTuner trial -> one recorded run; failures and invalid combinations end it as FAILED."""
        assert self.trials is not None
        started = time.perf_counter()
        self.started += 1
        self._last = None
        hp = trial.hyperparameters
        number = int(trial.trial_id)
        values = {k: v for k, v in hp.values.items()}
        epochs = hp.values.get("tuner/epochs")
        suggest = KerasTunerSuggest(hp)
        try:
            try:
                sample = self.trials.space(suggest)
            except InvalidConfiguration as exc:
                values |= suggest.chosen  # the record keeps the space's values: bools, not KerasTuner's text
                record = self.trials.record_invalid(number, values, str(exc))
                self._last = (record, "pruned", str(exc), started)
                raise kt_errors.FailedTrialError(f"invalid configuration, never built: {exc}") from None
            values |= suggest.chosen
            # Hyperband sets this round's epochs; a promoted trial goes on from its parent's last epoch.
            run_id, parent, note = self._continue(values, sample.architecture, epochs)
            # A trial below the last round may be promoted: its checkpoint stays until its child has used it.
            promotable = self._promotes() and epochs is not None and epochs < self.max_epochs
            runner = self.trials.runner
            keep, runner.keep_checkpoints = runner.keep_checkpoints, runner.keep_checkpoints or promotable
            try:
                record = self.trials.run(sample, number, values, epochs=epochs, run_id=run_id)
            finally:
                runner.keep_checkpoints = keep
        except HarnessError as exc:
            raise kt_errors.FatalError(str(exc)) from exc
        if promotable and not keep and record.artifacts:
            self._keep(str(Path(record.artifacts)), checkpoint_bytes(Path(record.artifacts)))
        if record.status == "complete" and record.val_auc is not None and math.isfinite(record.val_auc):
            if parent is not None:  # its child has it now: the parent's checkpoint is no longer needed
                start = int(values["continued_from"]["epoch"])
                self.continued.append((int(record.epochs_run or 0), start))
                if not keep:
                    delete_checkpoints(Path(parent), runner.results_dir)
                    self._keep(parent, 0)
            self._last = (record, "complete", note, started)
            return {"val_auc": float(record.val_auc)}
        reason = record.error or "validation AUC is undefined (one class in the validation set?)"
        self._last = (record, "failed", reason, started)
        raise kt_errors.FailedTrialError(reason)

    def _promotes(self) -> bool:
        return self.algorithm == "hyperband" and CONTINUE_PROMOTED

    def _continue(
        self, values: dict[str, Any], architecture: str, epochs: int | None
    ) -> tuple[str | None, str | None, str]:
        """For a promoted trial (`tuner/trial_id` set): a run id whose folder holds its parent's checkpoint, the
        parent's run folder, and the note its trial line gets; (None, None, note) trains it from scratch.

        KerasTuner's own Hyperband reloads the parent's best epoch into a freshly compiled model; here the trial goes
        on from the parent's last epoch with its optimiser state, so it equals the parent trained longer.
        """
        parent = values.get("tuner/trial_id")
        if parent is None or not self._promotes() or self.trials is None:
            return None, None, ""
        runner = self.trials.runner
        done = [r for r in runner.store.runs(study=self.study) if r.trial == int(parent) and r.status == "complete"]
        if not done or not done[-1].artifacts:
            return None, None, f"trained from scratch: trial #{int(parent)} has no complete run"
        source, run_id = Path(done[-1].artifacts), new_run_id(architecture)
        start = continue_from(source, runner.results_dir / "runs" / run_id)
        if start is None or (epochs is not None and start >= epochs):
            return None, None, f"trained from scratch: trial #{int(parent)} kept no checkpoint"
        values["continued_from"] = {"trial": int(parent), "run": done[-1].run_id, "epoch": start}
        return run_id, str(source), f"continued trial #{int(parent)} from epoch {start}"

    def _keep(self, folder: str, size: int) -> None:
        """Track the checkpoints kept for promotions (size 0: deleted) and the most they held at once."""
        if size:
            self._kept[folder] = size
        else:
            self._kept.pop(folder, None)
        count, total = len(self._kept), sum(self._kept.values())
        if total > self.peak_kept[1]:
            self.peak_kept = (count, total)

    def _tidy(self) -> None:
        """Once the study has all its trials, no trial is promoted any more: delete the checkpoints kept for that
        (unless --keep-checkpoints). A study stopped earlier (--timeout) keeps them for the rerun that continues it."""
        if not self._promotes() or self.trials is None:
            return
        runner, console = self.trials.runner, self.trials.console
        ended = self.counted() >= self.total
        freed = 0
        if ended and not runner.keep_checkpoints:
            for record in runner.store.runs(study=self.study):
                if record.status == "complete" and record.artifacts:
                    freed += delete_checkpoints(Path(record.artifacts), runner.results_dir)
        trained = sum(t for t, _ in self.continued)
        skipped = sum(s for _, s in self.continued)
        count, peak = self.peak_kept
        line = (
            f"hyperband: {len(self.continued)} promoted trials went on from their parents' checkpoints "
            f"({trained} epochs trained, {skipped} not retrained); checkpoints kept for promotion: at most {count} "
            f"at once, {peak / 1e6:.1f} MB"
        )
        if ended and not runner.keep_checkpoints:
            line += f"; {freed / 1e6:.1f} MB deleted as the study ended"
        elif not ended:
            line += "; kept for the rerun that continues the study"
        console.print(line, highlight=False)

    def after_trial(self, trial: keras_tuner.engine.trial.Trial) -> None:
        if self._last is not None and self.trials is not None:
            record, outcome, reason, started = self._last
            self.trial_seconds.append(time.perf_counter() - started)
            self.trials.finish(int(trial.trial_id), record, outcome, started, reason)
