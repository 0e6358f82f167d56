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
from harness.store.runs import RunRecord
from harness.tuning.space import InvalidConfiguration, KerasTunerSuggest, SpaceFunction, declare
from harness.tuning.trials import TrialRunner

ALGORITHMS = ("hyperband", "bayesian", "random")
SETTINGS_FILE = "harness-study.json"
INITIAL_POINTS = 10  # random trials before the Gaussian process (KerasTuner's default is 3 per parameter)
HYPERBAND_FACTOR = 3


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

    def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        self.engine.after_trial(trial)

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
        """Nothing to do: the runner saves each trial's model under results/runs/."""


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
        self.started = 0  # trials this session has started
        self._last: tuple[RunRecord, str, str, float] | None = None

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

    def open(self, settings: dict[str, Any], space: SpaceFunction, total: int) -> int:
        """Create or reload the project; return how many trials have already ended."""
        if not (self.project / SETTINGS_FILE).is_file():
            write_text(self.project / SETTINGS_FILE, json.dumps(settings, indent=2))
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

    def run_one(self, trial: keras_tuner.engine.trial.Trial) -> dict[str, float]:
        """One KerasTuner trial -> one recorded run; failures and invalid combinations end it as FAILED."""
        assert self.trials is not None
        started = time.perf_counter()
        self.started += 1
        self._last = None
        hp = trial.hyperparameters
        number = int(trial.trial_id)
        values = {k: v for k, v in hp.values.items()}
        try:
            try:
                sample = self.trials.space(KerasTunerSuggest(hp))
            except InvalidConfiguration as exc:
                record = self.trials.record_invalid(number, values, str(exc))
                self._last = (record, "pruned", str(exc), started)
                raise kt_errors.FailedTrialError(f"invalid configuration, never built: {exc}") from None
            # Hyperband sets this round's epochs; the model trains from scratch (the runner keeps no checkpoints).
            record = self.trials.run(sample, number, values, epochs=hp.values.get("tuner/epochs"))
        except HarnessError as exc:
            raise kt_errors.FatalError(str(exc)) from exc
        if record.status == "complete" and record.val_auc is not None and math.isfinite(record.val_auc):
            self._last = (record, "complete", "", started)
            return {"val_auc": float(record.val_auc)}
        reason = record.error or "validation AUC is undefined (one class in the validation set?)"
        self._last = (record, "failed", reason, started)
        raise kt_errors.FailedTrialError(reason)

    def after_trial(self, trial: keras_tuner.engine.trial.Trial) -> None:
        if self._last is not None and self.trials is not None:
            record, outcome, reason, started = self._last
            self.trials.finish(int(trial.trial_id), record, outcome, started, reason)
