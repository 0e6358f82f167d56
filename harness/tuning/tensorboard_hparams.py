"""TensorBoard's HParams dashboard for search trials: each trial's hyperparameters and final metrics (--tensorboard)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.errors import HarnessError
from harness.store.runs import RunRecord, RunStore

# The run's final scores (those of its kept epoch), written as scalars beside the trial's hyperparameters.
METRICS = ("val_auc", "val_accuracy", "val_loss")
TAG = "trial/{}"  # e.g. trial/val_auc: apart from Keras's per-epoch epoch_* scalars under train/ and validation/
_told: set[str] = set()  # the one-line notes already printed in this process


def missing() -> str | None:
    """Why the HParams summaries cannot be written here, or None. They are protocol buffers written with
    tensorboard's own event writer, so they need the tensorboard package but not TensorFlow."""
    try:
        from tensorboard.plugins.hparams import metadata, summary_v2  # noqa: F401
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: F401
    except ImportError as exc:
        return f"tensorboard's HParams plugin is not importable ({exc})"
    return None


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The values HParams takes (bool, number or text), nested dicts as dotted names; None is left out."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat(value, f"{name}.")
        elif hasattr(value, "item") and not isinstance(value, str):  # a numpy scalar
            out[name] = value.item()
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif value is not None:
            out[name] = str(value)  # a list of widths: one text value
    return out


def log_trial(
    root: Path, store: RunStore, run_id: str, hyperparameters: Mapping[str, Any], console: Console | None = None
) -> Path | None:
    """Write the trial's HParams session into `root/<run id>` (its Keras logs are in train/ and validation/ below);
    return that folder, or None where it cannot be written (one line says why, once)."""
    reason = missing()
    if reason is not None:
        _tell(console, f"--tensorboard: no HParams for search trials here: {reason}; the per-epoch scalars are written")
        return None
    try:
        record = store.get(run_id)
    except HarnessError:  # never started (an invalid point): nothing to show
        return None
    folder = Path(root) / run_id
    try:
        _write(folder, record, flat(hyperparameters))
    except OSError as exc:  # a full disk must not turn a recorded trial into a failed search
        _tell(console, f"--tensorboard: no HParams written under {root}: {exc}")
        return None
    return folder


def _write(folder: Path, record: RunRecord, hparams: dict[str, bool | int | float | str]) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    started = record.created_at.timestamp()
    summaries = [summary_v2.hparams_pb(hparams, trial_id=record.run_id, start_time_secs=started)]
    scores = {name: getattr(record, name) for name in METRICS if getattr(record, name) is not None}
    summaries.append(
        summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=TAG.format(k), simple_value=float(v)) for k, v in scores.items()]
        )
    )
    status = {"complete": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE}.get(record.status)
    end = plugin_data_pb2.SessionEndInfo(status=status or api_pb2.STATUS_UNKNOWN, end_time_secs=time.time())
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end))
    summaries.append(
        summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(
                    tag=metadata.SESSION_END_INFO_TAG, metadata=content, tensor=metadata.NULL_TENSOR
                )
            ]
        )
    )
    writer = EventFileWriter(str(folder))
    try:
        for summary in summaries:  # the step of the scores is the kept epoch they belong to
            writer.add_event(event_pb2.Event(wall_time=time.time(), step=record.best_epoch or 0, summary=summary))
    finally:
        writer.close()


def _tell(console: Console | None, line: str) -> None:
    if line not in _told:
        _told.add(line)
        (console or Console(stderr=True)).print(line, highlight=False, markup=False, soft_wrap=True)
