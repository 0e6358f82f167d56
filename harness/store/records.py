"""The run table's schema and its row as a record: what one run is, as the store keeps it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

STATUSES = ("running", "complete", "pruned", "failed", "interrupted")

metadata = sa.MetaData()
runs_table = sa.Table(
    "harness_runs",
    metadata,
    sa.Column("run_id", sa.String(120), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("architecture", sa.String(120), nullable=False),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("study", sa.String(200), index=True),
    sa.Column("trial", sa.Integer),
    sa.Column("tuner", sa.String(32)),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("hyperparameters", sa.JSON),
    sa.Column("val_accuracy", sa.Float),
    sa.Column("val_auc", sa.Float),
    sa.Column("val_loss", sa.Float),
    sa.Column("val_accuracy_std", sa.Float),
    sa.Column("val_auc_std", sa.Float),
    sa.Column("folds", sa.Integer),
    sa.Column("tta", sa.Integer),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("epochs_run", sa.Integer),
    sa.Column("seconds", sa.Float),
    sa.Column("images_per_second", sa.Float),
    sa.Column("parameters", sa.BigInteger),
    sa.Column("n_train", sa.Integer),
    sa.Column("n_val", sa.Integer),
    sa.Column("dataset", sa.Text),  # a path: PostgreSQL enforces VARCHAR lengths, SQLite does not
    sa.Column("synthetic", sa.Boolean),
    sa.Column("backend", sa.String(32)),
    sa.Column("environment", sa.JSON),
    sa.Column("artifacts", sa.Text),
    sa.Column("submission", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)


@dataclass(frozen=True)
class RunRecord:
    """One row of `harness_runs`."""

    run_id: str
    status: str
    architecture: str
    origin: str
    spec: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    study: str | None = None
    trial: int | None = None
    tuner: str | None = None
    hyperparameters: dict[str, Any] | None = None
    val_accuracy: float | None = None
    val_auc: float | None = None
    val_loss: float | None = None
    val_accuracy_std: float | None = None
    val_auc_std: float | None = None
    folds: int | None = None
    tta: int | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    parameters: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    dataset: str | None = None
    synthetic: bool | None = None
    backend: str | None = None
    environment: dict[str, Any] | None = None
    artifacts: str | None = None
    submission: str | None = None
    error: str | None = None
    host: str | None = None
    pid: int | None = None


COLUMNS = {f.name for f in fields(RunRecord)}
PATHS = ("artifacts", "submission")  # stored relative to the results folder


def now() -> dt.datetime:
    """The store's clock: UTC, without a time zone (SQLite keeps none)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
