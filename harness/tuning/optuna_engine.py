"""Optuna engine: seeded TPE with Hyperband pruning on per-epoch validation AUC, in the run store's database."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from harness.errors import HarnessError
from harness.store.database import env_seconds, first_line
from harness.store.runs import RunRecord, RunStore, StoreUnavailable
from harness.training.runner import new_run_id
from harness.tuning.optuna_pruning import OptunaPruning
from harness.tuning.optuna_storage import database_cause, open_storage
from harness.tuning.space import InvalidConfiguration
from harness.tuning.study_lock import StudyLock
from harness.tuning.trials import TrialRunner

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120  # a trial silent this long belongs to a dead process
STARTUP_TRIALS = 10  # random trials before TPE models the results
SETTINGS_ATTR = "harness_settings"
OBJECTIVE = "val_auc"  # the objective's name in the study: each trial's validation AUC, maximised
# Shorter heartbeats find dead workers sooner (the tests use 1 s and 3 s); every process on a study must agree.
ENV_HEARTBEAT = "HARNESS_HEARTBEAT_SECONDS"
ENV_GRACE = "HARNESS_GRACE_SECONDS"
LOST_WORKER = "its worker stopped sending heartbeats (killed, or its machine was lost); the trial is re-queued once"


class _StudyFull(Exception):
    """Raised in place of a new trial: the study has its `--trials`, so this worker stops."""


class _DatabaseFailed(BaseException):
    """Raised out of a trial whose database stopped answering: a BaseException, so that Optuna does not try to record
    the trial in the database it just lost. The trial stays RUNNING and its heartbeat stops: the study's own recovery
    (a stale heartbeat, then one retry) takes it over when the study resumes."""


def counts_toward_total(trial: FrozenTrial) -> bool:
    """Complete, pruned and genuinely failed trials count; a killed or interrupted one (FAIL, no outcome) does not."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("outcome") == "failed"


class OptunaEngine:
    """One Optuna study, opened for one session of `harness search`.

    Resume and crashes: the study lives in RDBStorage on the workspace URL, with a heartbeat. A trial whose process
    was killed stops beating (or never beat, killed right after it was asked); after the grace period any worker (or
    the next session) marks it FAIL, marks its run failed in the run store (on any host: the trial names its run) and
    re-queues its parameters once. `--trials N`
    counts trials that reached an outcome: complete, pruned (including never-built invalid combinations) and failed
    runs; killed or interrupted trials do not count, so they are redone.

    Parallel workers: each new trial is asked for under a per-study lock, and only while the trials that count plus
    those running are fewer than N, so N workers on one study run exactly N trials. A worker with no free slot waits
    while others' trials run (one may die and be re-queued) and stops once N count.
    """

    def __init__(self, storage_url: str, study: str, pruner: optuna.pruners.BasePruner | None = None) -> None:
        self.storage_url = storage_url
        self.study_name = study
        self.pruner = pruner
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the engine prints one line per trial itself
        self.heartbeat = env_seconds(ENV_HEARTBEAT, HEARTBEAT_SECONDS)
        self.grace = env_seconds(ENV_GRACE, GRACE_SECONDS)
        self.storage = open_storage(storage_url, self.heartbeat, self.grace)
        self.study: optuna.Study | None = None
        self.first: dict[str, Any] | None = None

    @contextlib.contextmanager
    def _database(self) -> Iterator[None]:
        """A database that fails under Optuna or the run store ends the session with one line, never a traceback."""
        try:
            yield
        except _DatabaseFailed as exc:
            raise HarnessError(str(exc)) from None
        except Exception as exc:
            cause = database_cause(exc)
            if cause is None:
                raise
            raise HarnessError(self._lost(cause)) from None

    def _lost(self, cause: BaseException) -> str:
        reason = str(cause) if isinstance(cause, StoreUnavailable) else first_line(cause)
        return (
            f"study {self.study_name}: the database stopped answering ({reason}); rerun to continue: a trial left "
            f"running is recovered once its heartbeat is {self.grace} s old"
        )

    def stored_settings(self) -> dict[str, Any] | None:
        """The settings the study was started with; None for a new study."""
        try:
            with self._database():
                study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:
            return None
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is None and study.trials:
            raise HarnessError(f"Optuna study {self.study_name!r} was not started by harness search; name another")
        return stored

    def open(
        self, settings: dict[str, Any], space: object = None, total: int = 0, first: dict[str, Any] | None = None
    ) -> int:
        """Create or load the study (a new one tries `first` as its first trial); fail the trials of dead processes;
        return how many trials count already."""
        self.first = first
        with self._database():
            self.study = optuna.create_study(
                study_name=self.study_name, storage=self.storage, direction="maximize", load_if_exists=True
            )
            if SETTINGS_ATTR not in self.study.user_attrs:
                self.study.set_user_attr(SETTINGS_ATTR, settings)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if self.study.metric_names != [OBJECTIVE]:  # studies from before it was named get the name too
                    self.study.set_metric_names([OBJECTIVE])  # what optuna-dashboard shows for the objective
                optuna.storages.fail_stale_trials(self.study)
        return self.counted()

    def counted(self) -> int:
        assert self.study is not None
        with self._database():
            return sum(counts_toward_total(t) for t in self.study.get_trials(deepcopy=False))

    def run(self, trials: TrialRunner, total: int, timeout_s: float | None) -> None:
        """Run trials until `total` count (or the timeout passes); every trial goes through the runner."""
        with self._database():
            self._run(trials, total, timeout_s)

    def _run(self, trials: TrialRunner, total: int, timeout_s: float | None) -> None:
        assert self.study is not None
        epochs = trials.settings.epochs * trials.settings.folds  # pruning steps run on across K-fold models
        pruner = self.pruner or optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
        seed = trials.settings.seed
        study = optuna.load_study(
            study_name=self.study_name, storage=self.storage, sampler=_sampler(seed, 0), pruner=pruner
        )
        self.release_lost_trials(trials.runner.store, study)
        if self.counted() >= total:
            return
        # Optuna's loop asks for each trial through `study.ask`: this instance's own `ask` hands out slots.
        study.ask = self._slot_asker(study, trials.runner.store, total, seed, timeout_s)  # type: ignore[method-assign]
        state: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with contextlib.suppress(_StudyFull):  # the study has its trials: this worker is done
                study.optimize(
                    self._objective(trials, epochs, state),
                    timeout=timeout_s,
                    callbacks=[self._after_trial(trials, total, state)],
                )

    def _slot_asker(
        self, study: optuna.Study, store: RunStore, total: int, seed: int, timeout_s: float | None
    ) -> Callable[..., optuna.Trial]:
        """`study.ask`, but only while a slot is free; waits while other workers' trials hold the last ones."""
        ask = study.ask
        lock = StudyLock(self.storage_url, self.study_name)
        deadline = time.monotonic() + timeout_s if timeout_s else math.inf
        poll = min(5.0, self.heartbeat)

        def ask_for_a_slot(*args: Any, **kwargs: Any) -> optuna.Trial:
            while True:
                with lock:
                    self.release_lost_trials(store, study)
                    now = study.get_trials(deepcopy=False)
                    done = sum(counts_toward_total(t) for t in now)
                    running = sum(t.state == TrialState.RUNNING for t in now)
                    if done >= total:
                        raise _StudyFull
                    if done + running < total:
                        if not now and self.first is not None:  # under the lock: one worker queues it, once
                            study.enqueue_trial(self.first)
                        # Seeded by the new trial's number, unique under the lock: workers never replay each
                        # other's random samples, and a resumed study does not replay its own.
                        study.sampler = _sampler(seed, len(now))
                        return ask(*args, **kwargs)
                if time.monotonic() + poll > deadline:
                    raise _StudyFull
                time.sleep(poll)  # a running trial ends, or its dead worker's heartbeat goes stale

        return ask_for_a_slot

    def release_lost_trials(self, store: RunStore, study: optuna.Study | None = None) -> int:
        """Fail the trials of workers whose heartbeat stopped (re-queued once) and their runs, on any host."""
        study = study or self.study
        assert study is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        lost = [
            str(t.user_attrs["run_id"])
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if "outcome" not in t.user_attrs and "run_id" in t.user_attrs
        ]
        return store.fail_if_running(lost, LOST_WORKER)

    def _objective(self, trials: TrialRunner, epochs: int, state: dict[str, Any]) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            try:
                return trial_outcome(trial)
            except (StoreUnavailable, optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
                raise _DatabaseFailed(self._lost(database_cause(exc) or exc)) from None

        def trial_outcome(trial: optuna.Trial) -> float:
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


def _sampler(seed: int, offset: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed + offset,
            n_startup_trials=STARTUP_TRIALS,
            multivariate=True,  # blocks x convs x width interact
            constant_liar=True,  # parallel workers avoid proposing the same point
        )


def sampler_for(seed: int, offset: int) -> optuna.samplers.TPESampler:
    """The study's TPE sampler, seeded by the trial number it proposes next (see _sampler)."""
    return _sampler(seed, offset)
