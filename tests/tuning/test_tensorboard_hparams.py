"""--tensorboard on a search: each trial's hyperparameters and final scores for TensorBoard's HParams dashboard."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import search_fixtures as sf

from harness.tuning.search import run_search

# --tensorboard needs TensorFlow's summary writer (Keras's callback) and tensorboard: without them it is refused.
HAS_TB = all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tensorboard"))


def _session(folder: Path):
    """The HParams session start and end, and the scalars, that TensorBoard's own reader finds in `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    return start, end, scalars


@pytest.mark.skipif(not HAS_TB, reason="--tensorboard needs tensorflow and tensorboard installed")
@pytest.mark.parametrize("tuner", ["optuna", "keras-tuner"])
def test_each_search_trial_writes_its_hparams_and_final_scores(make_kaggle, tmp_path, tuner):
    from tensorboard.plugins.hparams import api_pb2

    with sf.registered():
        ws = sf.workspace(make_kaggle(n_train=40, n_test=8), tmp_path / "results")
        options = sf.options(trials=2, tuner=tuner, tensorboard=str(tmp_path / "tb"))
        summary = run_search(ws, options)
    runs = ws.store().runs(study=summary.study)
    assert len(runs) == 2 and all(r.status == "complete" for r in runs), [r.error for r in runs]
    for record in runs:
        folder = tmp_path / "tb" / record.run_id
        start, end, scalars = _session(folder)
        assert start.group_name == record.run_id and end.status == api_pb2.STATUS_SUCCESS
        values = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
        assert values["width"] == record.hyperparameters["width"]
        assert values["learning_rate"] == pytest.approx(record.hyperparameters["learning_rate"])
        assert scalars["trial/val_auc"] == pytest.approx(record.val_auc, abs=1e-6)
        assert scalars["trial/val_accuracy"] == pytest.approx(record.val_accuracy, abs=1e-6)
        assert list((folder / "validation").glob("events.out.tfevents.*"))  # Keras's per-epoch logs, one level down


@pytest.mark.backend_free
def test_hparams_take_nested_and_listed_values_flat():
    from harness.tuning.tensorboard_hparams import flat

    got = flat({"width": 3, "derived": {"gmacs": 0.5, "widths": [4, 8]}, "none": None, "tuner/epochs": 2})
    assert got == {"width": 3, "derived.gmacs": 0.5, "derived.widths": "[4, 8]", "tuner/epochs": 2}
