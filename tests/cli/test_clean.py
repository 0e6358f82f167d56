"""Disk: `harness clean` (stale caches, models outside the top K, checkpoints of stopped runs), models saved without
optimiser state, artefacts that follow the umask."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pandas as pd

from harness.atomic import atomic_path, write_text
from harness.clean import current_fingerprint
from harness.cli import main
from harness.data import load_dataset
from harness.store.runs import RunStore, default_storage


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _line(out: str, path) -> str:
    return next(line for line in out.splitlines() if str(path) in line)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_clean_lists_stale_caches_first_and_deletes_them_only_with_yes(make_kaggle, tmp_path, capsys):
    kaggle = make_kaggle(n_train=8, n_test=4)
    results = tmp_path / "results"
    cache = results / "cache"
    old = load_dataset(kaggle, cache, progress=False)
    image = next((kaggle / "train").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # a touched folder
    new = load_dataset(kaggle, cache, progress=False)
    assert old.fingerprint != new.fingerprint and current_fingerprint(kaggle) == new.fingerprint
    dead = cache / f".tmp-{old.fingerprint}-{socket.gethostname()}-{_dead_pid()}-x1y2"
    dead.mkdir()
    (dead / "train_images.npy").write_bytes(b"\0" * 1000)
    # The folder is known from a stored run (no --data needed).
    RunStore(default_storage(results)).start(
        "r1", architecture="cnn", origin="run", spec={}, dataset=str(kaggle), artifacts=str(results / "runs" / "r1")
    )

    code, out, _ = run_cli(capsys, "clean", "--results", str(results))
    assert code == 0
    assert _line(out, old.cache_path).startswith("would remove") and "stale decode cache" in out
    assert _line(out, dead).startswith("would remove")
    assert _line(out, new.cache_path).startswith("keep") and str(kaggle) in _line(out, new.cache_path)
    size = sum(f.stat().st_size for f in old.cache_path.iterdir()) + 1000
    assert f"({size:,} bytes) in 2 items" in out and "--yes" in out
    assert old.cache_path.is_dir() and dead.is_dir(), "a dry run deleted something"

    code, out, _ = run_cli(capsys, "clean", "--results", str(results), "--yes")
    assert code == 0 and "freed" in out
    assert not old.cache_path.exists() and not dead.exists()
    assert sorted(p.name for p in cache.iterdir()) == [new.fingerprint]
    assert load_dataset(kaggle, cache, progress=False).from_cache  # the cache in use is intact


def test_clean_removes_the_models_of_runs_outside_the_top_k_of_each_validation_set(tmp_path, capsys):
    results = tmp_path / "results"
    store = RunStore(default_storage(results))

    def run(run_id, acc, sample, status="complete"):
        folder = results / "runs" / run_id
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"k" * 100)
        (folder / "submission.csv").write_text("id,label\n")
        data = {"protocol": "seed", "sample": sample, "seed": 101, "folds": 1}
        store.start(run_id, architecture="cnn", origin="run", spec={"data": data}, n_val=sample // 10,
                    dataset="/data", artifacts=str(folder))  # fmt: skip
        if status != "running":
            submission = str(folder / "submission.csv")
            store.update(run_id, status=status, val_accuracy=acc, val_auc=acc, submission=submission)
        return folder / "model.keras"

    best_a, second_a = run("a1", 0.9, 2000), run("a2", 0.8, 2000)
    best_b, second_b = run("b1", 0.7, 1000), run("b2", 0.6, 1000)
    failed, running = run("f", None, 2000, "failed"), run("r", None, 2000, "running")

    code, out, _ = run_cli(capsys, "clean", "--models-outside-top", "1", "--results", str(results))
    assert code == 0
    for model in (second_a, second_b, failed):
        assert _line(out, model).startswith("would remove") and model.exists()
    assert "rank 2 of 2 on sample 2,000 · val 200, outside the top 1" in _line(out, second_a)
    for model in (best_a, best_b):
        assert _line(out, model).startswith("keep")
    assert str(running) not in out  # a run still training keeps its model

    assert run_cli(capsys, "clean", "--models-outside-top", "1", "--results", str(results), "--apply")[0] == 0
    assert [m.exists() for m in (best_a, second_a, best_b, second_b, failed, running)] == [1, 0, 1, 0, 0, 1]
    assert (results / "runs" / "a2" / "submission.csv").exists()  # only the model goes


def test_final_models_are_saved_without_optimizer_state_unless_asked(runner):
    from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig

    spec = RunSpec(
        architecture="cnn",
        arch_kwargs={"widths": [4], "convs": [1], "dense": [8]},
        training=TrainingConfig(epochs=1, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3)),
        data=DataConfig(),
        seed=1,
    )

    def saved(record) -> tuple[int, int]:
        path = f"{record.artifacts}/model.keras"
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as handle, h5py.File(handle) as h5:
            n_slots = len(h5["optimizer"]["vars"]) if "optimizer" in h5 else 0
        return os.path.getsize(path), n_slots

    lean = runner.run(spec)
    assert lean.status == "complete", lean.error
    runner.save_optimizer = True
    full = runner.run(spec)
    (lean_size, lean_slots), (full_size, full_slots) = saved(lean), saved(full)
    assert lean_slots == 0 and full_slots > 0
    assert lean_size < full_size

    # The weights-only file reproduces the run's own test predictions.
    from harness.training.inference import predict_probabilities
    from harness.training.portable import load_model_safely

    test = runner.dataset.test
    model = load_model_safely(runner.results_dir / "runs" / lean.run_id / "model.keras")
    probabilities = predict_probabilities(model, test.images, np.arange(len(test)))
    submitted = pd.read_csv(lean.submission, dtype={"id": str}).set_index("id")["label"]
    assert np.allclose(submitted.loc[list(test.ids)].to_numpy(), probabilities, atol=1e-5)


def test_atomic_writes_follow_the_umask(tmp_path):
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        folder = tmp_path / oct(umask)
        previous = os.umask(umask)
        try:
            write_text(folder / "spec.json", "{}")
            with atomic_path(folder / "val_predictions.csv") as tmp:
                tmp.write_text("id,label\n")
        finally:
            os.umask(previous)
        for name in ("spec.json", "val_predictions.csv"):
            assert (folder / name).stat().st_mode & 0o777 == mode, (oct(umask), name)
        assert sorted(p.name for p in folder.iterdir()) == ["spec.json", "val_predictions.csv"]


def test_clean_lists_checkpoints_and_removes_those_of_stopped_runs_only_with_checkpoints(tmp_path, capsys):
    from harness.clean import human, size_of

    results = tmp_path / "results"
    store = RunStore(default_storage(results))

    def run(run_id, status, folders=("checkpoint",), epoch=2, **where):
        folder = results / "runs" / run_id
        store.start(run_id, architecture="cnn", origin="run", spec={}, dataset="/data", artifacts=str(folder))
        store.update(run_id, status=status, **where)
        found = []
        for name in folders:
            checkpoint = folder / name
            checkpoint.mkdir(parents=True)
            (checkpoint / f"epoch{epoch}.weights.h5").write_bytes(b"w" * 1000)
            if epoch:  # state.json is written last: without it no epoch completed
                write_text(checkpoint / "state.json", f'{{"epoch": {epoch}}}')
            found.append(checkpoint)
        return found

    failed = run("failed-run", "failed")
    folds = run("interrupted-run", "interrupted", folders=("fold0/checkpoint", "fold1/checkpoint"))
    killed = run("killed-run", "running", pid=_dead_pid())  # 'running' here, its process gone: failed once reaped
    kept = run("kept-run", "complete")  # --keep-checkpoints
    promotable = run("hyperband-trial", "complete", tuner="keras-tuner")  # a Hyperband study may promote it
    empty = run("empty-run", "failed", epoch=0)  # killed in its first epoch: nothing to resume
    live = run("live-run", "running")  # this very process: alive
    remote = run("remote-run", "running", host="another-machine")  # its pid cannot be checked from here
    resumable = [*failed, *folds, *killed, *kept, *promotable]

    code, out, _ = run_cli(capsys, "clean", "--results", str(results))
    assert code == 0
    for checkpoint in resumable:
        line = _line(out, checkpoint)
        assert line.startswith("keep") and human(size_of(checkpoint)) in line and "--checkpoints removes it" in line
    assert "`harness run failed-run --resume` from epoch 2 uses it" in _line(out, failed[0])
    assert "`harness run killed-run --resume`" in _line(out, killed[0])
    assert "kept by --keep-checkpoints" in _line(out, kept[0])
    assert "kept for a Hyperband promotion" in _line(out, promotable[0])
    assert _line(out, empty[0]).startswith("would remove") and "resumes nothing" in _line(out, empty[0])
    assert "still running (process" in _line(out, live[0])
    assert "still running on another-machine" in _line(out, remote[0])

    code, out, _ = run_cli(capsys, "clean", "--checkpoints", "--results", str(results))
    assert code == 0 and all(c.exists() for c in [*resumable, *empty]), "a dry run deleted something"
    for checkpoint in [*resumable, *empty]:
        assert _line(out, checkpoint).startswith("would remove")
    for checkpoint in [*live, *remote]:
        assert _line(out, checkpoint).startswith("keep")
    assert "--checkpoints gives up `harness run failed-run --resume` from epoch 2" in _line(out, failed[0])
    total = sum(size_of(c) for c in [*resumable, *empty])
    assert f"would free {human(total)} ({total:,} bytes) in {len(resumable) + 1} items" in out

    code, out, _ = run_cli(capsys, "clean", "--checkpoints", "--results", str(results), "--yes")
    assert code == 0 and f"freed {human(total)} ({total:,} bytes)" in out
    assert not any(c.exists() for c in [*resumable, *empty])
    assert all(c.exists() for c in [*live, *remote]), "a running run's checkpoint was removed"
    assert (results / "runs" / "interrupted-run").is_dir()  # only the checkpoints go


def test_clean_names_the_checkpoint_files_the_training_writes():
    from harness import clean
    from harness.training import checkpoint

    assert (clean._CHECKPOINT, clean._STATE) == (checkpoint.CHECKPOINT, checkpoint.STATE)
