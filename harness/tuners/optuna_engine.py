"""Optuna engine: seeded TPE with Hyperband pruning on per-epoch validation AUC, in the run store's database."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from harness.errors import HarnessError
from harness.runner import new_run_id
from harness.space import InvalidConfiguration
from harness.store import RunRecord, redact
from harness.tuners.optuna_pruning import OptunaPruning
from harness.tuners.trials import TrialRunner

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120  # a trial silent this long belongs to a dead process
STARTUP_TRIALS = 10  # random trials before TPE models the results
SETTINGS_ATTR = "harness_settings"


def _retry_stale_trials_once() -> dict[str, Any]:
    """Re-queue a dead process's trial once (the callback's name changed in Optuna 4.9)."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}


def counts_toward_total(trial: FrozenTrial) -> bool:
    """Complete, pruned and genuinely failed trials count; a killed or interrupted one (FAIL, no outcome) does not."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("outcome") == "failed"


class OptunaEngine:
    """One Optuna study, opened for one session of `harness search`.

    Resume and crashes: the study lives in RDBStorage on the workspace URL, with a heartbeat. A trial whose process
    was killed stops beating; the next session marks it FAIL (the run store marks its run failed: `reap_dead`) and
    re-queues its parameters once. `--trials N` counts trials that reached an outcome: complete, pruned (including
    never-built invalid combinations) and failed runs; killed or interrupted trials do not count, so they are redone.
    """

    def __init__(self, storage_url: str, study: str, pruner: optuna.pruners.BasePruner | None = None) -> None:
        self.storage_url = storage_url
        self.study_name = study
        self.pruner = pruner
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the engine prints one line per trial itself
        try:
            backend = make_url(storage_url).get_backend_name()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.storage = RDBStorage(
                    storage_url,
                    engine_kwargs={"connect_args": {"timeout": 60}} if backend == "sqlite" else {},
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    **_retry_stale_trials_once(),
                )
        except (SQLAlchemyError, ModuleNotFoundError, RuntimeError) as exc:
            raise HarnessError(f"cannot open Optuna storage at {redact(storage_url)}: {exc}") from None
        self.study: optuna.Study | None = None

    def stored_settings(self) -> dict[str, Any] | None:
        """The settings the study was started with; None for a new study."""
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:
            return None
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is None and study.trials:
            raise HarnessError(f"Optuna study {self.study_name!r} was not started by harness search; name another")
        return stored

    def open(self, settings: dict[str, Any], space: object = None, total: int = 0) -> int:
        """Create or load the study; fail the trials of dead processes; return how many trials count already."""
        self.study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, direction="maximize", load_if_exists=True
        )
        if SETTINGS_ATTR not in self.study.user_attrs:
            self.study.set_user_attr(SETTINGS_ATTR, settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        return self.counted()

    def counted(self) -> int:
        assert self.study is not None
        return sum(counts_toward_total(t) for t in self.study.get_trials(deepcopy=False))

    def run(self, trials: TrialRunner, total: int, timeout_s: float | None) -> None:
        """Run trials until `total` count (or the timeout passes); every trial goes through the runner."""
        assert self.study is not None
        epochs = trials.settings.epochs * trials.settings.folds  # pruning steps run on across K-fold models
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Offset the seed by the trials so far: a resumed study must not replay its first random samples.
            sampler = optuna.samplers.TPESampler(
                seed=trials.settings.seed + len(self.study.trials),
                n_startup_trials=STARTUP_TRIALS,
                multivariate=True,  # blocks x convs x width interact
                constant_liar=True,  # parallel workers avoid proposing the same point
            )
        pruner = self.pruner or optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=sampler, pruner=pruner)
        remaining = total - self.counted()
        if remaining <= 0:
            return
        state: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(
                self._objective(trials, epochs, state),
                n_trials=remaining,
                timeout=timeout_s,
                callbacks=[self._after_trial(trials, total, state)],
            )

    def _objective(self, trials: TrialRunner, epochs: int, state: dict[str, Any]) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            state.clear()
            state["started"] = time.perf_counter()
            try:
                sample = trials.space(trial)
            except InvalidConfiguration as exc:
                record = trials.record_invalid(trial.number, dict(trial.params), str(exc))
                self._mark(trial, state, record, "pruned", reason=str(exc))
                raise optuna.TrialPruned(str(exc)) from None
            pruning = OptunaPruning(trial, epochs)
            run_id = new_run_id(sample.architecture)
            trial.set_user_attr("run_id", run_id)  # linked before training, so a killed trial is traceable
            try:
                record = trials.run(
                    sample,
                    trial.number,
                    dict(trial.params),
                    callbacks=[pruning],
                    pruned_exceptions=(optuna.TrialPruned,),
                    run_id=run_id,
                )
            except optuna.TrialPruned as exc:
                logs = pruning.last_logs
                trials.runner.store.update(
                    run_id,
                    epochs_run=pruning.epochs_done,
                    **{k: logs[k] for k in ("val_auc", "val_accuracy", "val_loss") if k in logs},
                )
                self._mark(trial, state, trials.runner.store.get(run_id), "pruned", reason=str(exc))
                raise
            if record.status == "complete" and record.val_auc is not None and math.isfinite(record.val_auc):
                self._mark(trial, state, record, "complete")
                return float(record.val_auc)
            reason = record.error or "validation AUC is undefined (one class in the validation set?)"
            self._mark(trial, state, record, "failed", reason=reason)
            return math.nan  # Optuna records a nan objective as FAIL: both stores agree

        return objective

    @staticmethod
    def _mark(trial: optuna.Trial, state: dict[str, Any], record: RunRecord, outcome: str, reason: str = "") -> None:
        state.update(record=record, outcome=outcome, reason=reason)
        trial.set_user_attr("run_id", record.run_id)
        trial.set_user_attr("outcome", outcome)
        if reason:
            trial.set_user_attr("reason", reason[:500])

    def _after_trial(
        self, trials: TrialRunner, total: int, state: dict[str, Any]
    ) -> Callable[[optuna.Study, FrozenTrial], None]:
        def after(study: optuna.Study, trial: FrozenTrial) -> None:
            if "outcome" in state:
                trials.finish(trial.number, state["record"], state["outcome"], state["started"], state["reason"])
            if sum(counts_toward_total(t) for t in study.get_trials(deepcopy=False)) >= total:
                study.stop()  # also stops when other workers or re-queued trials filled the study

        return after
