"""`harness clean`: find stale decode caches, the models of runs outside the top K and the checkpoints of runs that
stopped; delete them only when asked."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.data.cache import dead_build_pid, discard_folder
from harness.data.layout import survey
from harness.errors import HarnessError
from harness.path_guard import outside_reason, refuse_outside
from harness.ranking.leaderboard import DEFAULT_BY, rank
from harness.store.runs import RunRecord, pid_alive
from harness.workspace import Workspace

_CACHE_NAME = re.compile(r"[0-9a-f]{32}")  # a finished cache: results/cache/<fingerprint>/
# harness.training.checkpoint.CHECKPOINT and STATE, named here: that module imports Keras, and clean builds no model.
_CHECKPOINT = "checkpoint"
_STATE = "state.json"


@dataclass(frozen=True)
class Item:
    """A file or folder `clean` would remove (or keeps), its size in bytes and why."""

    path: Path
    size: int
    reason: str


@dataclass(frozen=True)
class Plan:
    remove: list[Item]
    keep: list[Item]
    notes: tuple[str, ...] = ()  # records whose stored paths were not followed, and why

    @property
    def size(self) -> int:
        return sum(item.size for item in self.remove)


def size_of(path: Path) -> int:
    """Bytes under `path` (a file or a folder; links are not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed meanwhile
                continue
    return total


def human(n: int) -> str:
    """Bytes for people: 417.3 MB, 6.10 GB (powers of 1000, as `ls -h --si` and disk vendors count)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GB" else f"{n / scale:.1f} {unit}"
    return f"{n} B"


def current_fingerprint(folder: Path) -> str | None:
    """The cache name `load_dataset` gives `folder` as it is now (from the CSVs and every image's name, size and
    mtime; nothing is decoded), or None when the folder cannot be loaded and so has no cache in use."""
    try:
        return survey(folder).fingerprint
    except (HarnessError, OSError):
        return None


def plan_caches(cache_root: Path, folders: Iterable[Path]) -> Plan:
    """Caches under `cache_root` that no folder in `folders` would read now (changed or gone), and the folders
    that killed builds left behind. A cache some folder still matches is kept."""
    in_use: dict[str, Path] = {}
    for folder in folders:
        fingerprint = current_fingerprint(folder)
        if fingerprint:
            in_use.setdefault(fingerprint, folder)
    remove: list[Item] = []
    keep: list[Item] = []
    if not cache_root.is_dir():
        return Plan(remove, keep)
    for entry in sorted(cache_root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if _CACHE_NAME.fullmatch(entry.name):
            if entry.name in in_use:
                keep.append(Item(entry, size_of(entry), f"the decode cache of {in_use[entry.name]}"))
            else:
                why = "stale decode cache: no data folder the runs used (nor --data, nor the demo) matches it now"
                remove.append(Item(entry, size_of(entry), why))
        elif (pid := dead_build_pid(entry)) is not None:
            remove.append(Item(entry, size_of(entry), f"left by a cache build that ended (process {pid})"))
    return Plan(remove, keep)


def _guarded(root: Path | None, item: Item, remove: list[Item], keep: list[Item]) -> None:
    """`item` goes to `remove` unless removing it would change a file outside the results folder `root` (a run
    folder moved elsewhere and linked back): then it is kept, and its line says where it really is."""
    reason = outside_reason(root, item.path) if root is not None else None
    if reason is None:
        remove.append(item)
    else:
        keep.append(Item(item.path, item.size, f"{item.reason}; never removed: {reason}"))


def plan_models(records: list[RunRecord], top: int, by: str = DEFAULT_BY, root: Path | None = None) -> Plan:
    """The model.keras files of runs outside the top `top` of their validation set (ranked as the leaderboard
    ranks them), and of runs that did not complete. Runs still training keep theirs."""
    if top < 0:
        raise HarnessError(f"--models-outside-top must be 0 or more, got {top}")
    # An ensemble has no model of its own: the K kept are models.
    frame = rank([r for r in records if r.origin != "ensemble"], by)
    position: dict[str, str] = {}
    kept_ids: set[str] = set()
    for _, group in frame[frame["rank"].notna()].groupby("val_key", sort=False):
        for i, (run, label) in enumerate(zip(group["run"], group["val_set_long"], strict=True), start=1):
            if i <= top:
                kept_ids.add(run)
            position[run] = f"rank {i} of {len(group)} on {label}"
    remove: list[Item] = []
    keep: list[Item] = []
    for record in records:
        if record.status == "running" or not record.artifacts:
            continue
        folder = Path(record.artifacts)
        models = sorted(folder.glob("model.keras")) + sorted(folder.glob("fold*/model.keras"))
        for model in models:
            where = position.get(record.run_id, f"status {record.status}")
            if record.run_id in kept_ids:
                keep.append(Item(model, size_of(model), f"model of run {record.run_id}: {where}"))
            else:
                why = f"model of run {record.run_id}: {where}, outside the top {top}"
                _guarded(root, Item(model, size_of(model), why), remove, keep)
    return Plan(remove, keep)


def _still_running(record: RunRecord) -> str | None:
    """Why a 'running' record may still be training (None once its process is known to be gone): a live process on
    this host, or any process on another host, whose pid cannot be checked from here."""
    if record.status != "running":
        return None
    if record.host and record.host != socket.gethostname():
        return f"still running on {record.host} (process {record.pid}; its heartbeat is recent)"
    if record.pid is None or pid_alive(record.pid):
        return f"still running (process {record.pid})"
    return None


def _saved_epoch(checkpoint: Path) -> int | None:
    """The last epoch a checkpoint completed (its state.json), or None when it completed none."""
    try:
        return int(json.loads((checkpoint / _STATE).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_checkpoints(records: list[RunRecord], checkpoints: bool = False, root: Path | None = None) -> Plan:
    """The per-epoch checkpoints (runs/<id>/checkpoint/, one per fold) that runs left behind.

    The rule: a run still running keeps its checkpoint, always (on another host its process cannot be checked, so
    'running' there counts as running). Any other checkpoint is listed with its size and removed only with
    `checkpoints` (--checkpoints): that of a run that stopped before it finished (failed, interrupted, or 'running'
    here with its process gone) is what `harness run RUN_ID --resume` goes on from, so removing it gives that up;
    that of a finished run was kept with --keep-checkpoints, or by a KerasTuner Hyperband study for a trial it may
    promote (a promoted trial whose parent has none trains from scratch). One that completed no epoch resumes
    nothing: it goes without the flag, as a stale cache does.
    """
    remove: list[Item] = []
    keep: list[Item] = []
    for record in records:
        if not record.artifacts:
            continue
        folder = Path(record.artifacts)
        found = [folder / _CHECKPOINT, *sorted(folder.glob(f"fold*/{_CHECKPOINT}"))]
        for checkpoint in (c for c in found if c.is_dir() and not c.is_symlink()):
            size, whose, epoch = size_of(checkpoint), f"checkpoint of run {record.run_id}", _saved_epoch(checkpoint)
            running = _still_running(record)
            finished = record.status in ("complete", "pruned")
            stopped = "killed (its process ended)" if record.status == "running" else record.status
            resume = f"`harness run {record.run_id} --resume` from epoch {epoch}"
            if finished and record.tuner == "keras-tuner":  # a Hyperband study that goes on may promote it
                what = f"{record.status}, kept for a Hyperband promotion (without it the promoted trial starts afresh)"
            elif finished:
                what = f"{record.status}, kept by --keep-checkpoints; nothing resumes a finished run"
            else:
                what = f"{stopped}; --checkpoints gives up {resume}" if checkpoints else f"{stopped}; {resume} uses it"
            if running:
                keep.append(Item(checkpoint, size, f"{whose}: {running}"))
            elif not finished and epoch is None:
                item = Item(checkpoint, size, f"{whose}: {stopped}, no epoch completed: it resumes nothing")
                _guarded(root, item, remove, keep)
            elif checkpoints:
                _guarded(root, Item(checkpoint, size, f"{whose}: {what}"), remove, keep)
            else:
                keep.append(Item(checkpoint, size, f"{whose}: {what}; --checkpoints removes it"))
    return Plan(remove, keep)


def plan_workspace(
    workspace: Workspace, models_outside_top: int | None = None, by: str = DEFAULT_BY, checkpoints: bool = False
) -> Plan:
    """What `harness clean` keeps and removes: stale decode caches, the checkpoints of stopped runs (with
    `checkpoints`, see plan_checkpoints), and with a K the models outside the top K."""
    from harness.data.demo import DEMO_DIRNAME

    store = workspace.store()
    records = store.runs()
    root = workspace.results
    # The folders whose caches are in use: every dataset a stored run used, --data, and the demo.
    folders = {Path(r.dataset) for r in records if r.dataset}
    folders |= {workspace.data.resolve()} if workspace.data else set()
    folders.add((workspace.results / DEMO_DIRNAME).resolve())
    plans = [plan_caches(root / "cache", sorted(folders)), plan_checkpoints(records, checkpoints, root)]
    if models_outside_top is not None:
        plans.append(plan_models(records, models_outside_top, by, root))
    return Plan(
        keep=[i for plan in plans for i in plan.keep],
        remove=[i for plan in plans for i in plan.remove],
        notes=tuple(store.refused.values()),
    )


def delete(item: Item, root: Path) -> None:
    """Delete a file, or a folder after moving it aside (a half-deleted cache never looks like a cache); never
    anything whose real place is outside the results folder `root` (checked again here, at the last moment)."""
    path = refuse_outside(root, item.path, "delete")
    if not path.exists():
        return
    if path.is_dir() and not path.is_symlink():
        discard_folder(path)
    else:
        path.unlink()


def apply_plan(plan: Plan, root: Path) -> list[tuple[Item, str]]:
    """Delete every item `plan` removes; the items that could not be, each with why (one line)."""
    failed: list[tuple[Item, str]] = []
    for item in plan.remove:
        try:
            delete(item, root)
        except HarnessError as exc:
            failed.append((item, str(exc)))
        except OSError as exc:
            failed.append((item, f"cannot remove {item.path}: {exc.strerror or exc}"))
    return failed
