"""Optuna's RDB storage as the harness opens it: bounded waits, heartbeats that survive a silent database, and
recovery of trials whose process died before their first heartbeat."""

from __future__ import annotations

import contextlib
import time
import warnings
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from harness.errors import HarnessError
from harness.store.database import (
    engine_connect_args,
    engine_url,
    open_error,
    parse,
    prepare_postgres,
    redact,
    wait_for_reconnects,
)
from harness.store.runs import StoreUnavailable


def open_storage(storage_url: str, heartbeat: int, grace: int) -> RDBStorage:
    """The study storage on `storage_url`; a one-line HarnessError when it cannot be opened."""
    postgres = parse(storage_url).get_backend_name() == "postgresql"
    for attempt in range(3):
        try:
            if postgres:
                prepare_postgres()  # bounded waits on the server, as for the run store
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = _Storage(
                    engine_url(storage_url),
                    engine_kwargs={"connect_args": engine_connect_args(storage_url), "pool_pre_ping": True},
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    **_retry_stale_trials_once(),
                )
            break
        except (SQLAlchemyError, ModuleNotFoundError, RuntimeError, ValueError) as exc:
            # Workers starting together on a new database race to create Optuna's tables: try again.
            racing = isinstance(exc, (IntegrityError, ProgrammingError)) or (
                isinstance(exc, OperationalError) and ("already exists" in str(exc) or "locked" in str(exc))
            )  # SQLite says "table ... already exists" where PostgreSQL raises an IntegrityError
            if attempt < 2 and racing:
                time.sleep(0.5)
                continue
            reason = open_error(storage_url, exc)
            raise HarnessError(f"cannot open Optuna storage at {redact(storage_url)}: {reason}") from None
    if postgres:
        wait_for_reconnects(storage.engine, connected=True)  # it connected to make its tables
    return storage


class _Storage(RDBStorage):
    """Optuna's RDBStorage, but a heartbeat that cannot reach the database is skipped instead of killing its thread
    with a traceback: the main thread meets the same silence, waits for it visibly and stops after the limit. And a
    trial that never beat is stale too, once it is older than the grace period (see `_get_stale_trial_ids`)."""

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.StorageInternalError, SQLAlchemyError):
            super().record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials (a heartbeat older than the grace period), and RUNNING trials with no heartbeat at
        all that started longer ago than that: their process died between `study.ask()` and its first heartbeat, and
        Optuna, which only looks at trials with a heartbeat row, would leave them RUNNING for ever (holding a slot).
        Called by `optuna.storages.fail_stale_trials`, which marks them FAIL and re-queues them once."""
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        # Optuna stamps datetime_start with the asking machine's local clock (datetime.now()): read it the same way.
        cutoff = datetime.now() - timedelta(seconds=grace)
        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        with _create_scoped_session(self.scoped_session) as session:
            beatless = (
                session.query(trial.trial_id)
                .outerjoin(beat, beat.trial_id == trial.trial_id)
                .filter(trial.study_id == study_id, trial.state == TrialState.RUNNING)
                .filter(beat.trial_heartbeat_id.is_(None), trial.datetime_start < cutoff)
                .all()
            )
        return stale + [row.trial_id for row in beatless if row.trial_id not in stale]


def database_cause(exc: BaseException) -> BaseException | None:
    """The database failure behind an exception, following its chain (Optuna wraps and re-raises while it fails)."""
    found: BaseException | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreUnavailable):
            return current
        if found is None and isinstance(current, SQLAlchemyError):
            found = current
        current = current.__cause__ or current.__context__
    return found


def _retry_stale_trials_once() -> dict[str, Any]:
    """Re-queue a dead process's trial once (the callback's name changed in Optuna 4.9)."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
