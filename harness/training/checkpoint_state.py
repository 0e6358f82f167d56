"""A checkpoint's state.json is input: its keys, types, ranges and its agreement with its own history are checked
before a resumed fit trusts it, as strictly as `--config` is checked (a hand-edited "epoch": 99 finishes nothing)."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeGuard

from harness.errors import HarnessError


class DamagedCheckpoint(HarnessError):
    """A checkpoint whose state does not describe a fit that could have happened."""


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_state(path: Path, raw: Any, known: list[str], epochs: int | None, patience: int | None) -> dict[str, Any]:
    """`raw` (state.json's content) when it is a state a fit of `epochs` epochs could have written, else one line
    that names the file and what is wrong."""

    def bad(problem: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(
            f"checkpoint {path}: {problem}; it was changed or damaged: run `harness clean --checkpoints` to drop it"
            " and train the run anew"
        )

    if not isinstance(raw, dict):
        raise bad(f"expected an object of fit state, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}")
    epoch, rows = raw.get("epoch", 0), raw.get("rows", [])
    if not _is_int(epoch) or epoch < 0:
        raise bad(f"epoch {epoch!r} is not a whole number of epochs")
    if epochs is not None and epoch > epochs:
        raise bad(f"epoch {epoch} is more than the run's {epochs} epochs")
    start = raw.get("start_epoch", 0 if rows or not epoch else epoch)  # older continued states wrote no start
    if not _is_int(start) or not 0 <= start <= epoch:
        raise bad(f"start_epoch {start!r} is not from 0 to epoch {epoch}")
    if not isinstance(rows, list) or len(rows) != epoch - start:
        count = len(rows) if isinstance(rows, list) else "no"
        raise bad(f"it has {count} history rows for epochs {start + 1} to {epoch}")
    for i, row in enumerate(rows, start=start + 1):
        if not isinstance(row, dict) or row.get("epoch") != i:
            raise bad(f"history row {i - start} is not epoch {i}")
        for key, value in row.items():
            if (value is not None and not _is_number(value)) or (_is_number(value) and math.isinf(value)):
                raise bad(f"epoch {i}'s {key} is {value!r}, not a finite number")
    seconds = raw.get("train_seconds", [])
    if not isinstance(seconds, list) or len(seconds) != len(rows):
        raise bad("its training seconds do not match its history rows")
    if any(not _is_number(s) or not math.isfinite(s) or s < 0 for s in seconds):
        raise bad("a training time is not a finite number of seconds")
    _check_best(raw, rows, start, epoch, bad)
    for flag in ("finished", "stopped_by_time_limit"):
        if not isinstance(raw.get(flag, False), bool):
            raise bad(f"{flag} is {raw[flag]!r}, not true or false")
    wait = raw.get("wait", 0)
    if not _is_int(wait) or not 0 <= wait <= epoch:
        raise bad(f"wait {wait!r} is not from 0 to epoch {epoch}")
    stopped_early = raw.get("stopped_by_time_limit", False) or (patience is not None and wait >= patience)
    if raw.get("finished") and epochs is not None and epoch < epochs and not stopped_early:
        raise bad(f"it says finished after epoch {epoch} of {epochs}, with neither the time limit nor patience")
    return raw


def _check_best(raw: dict[str, Any], rows: list[dict[str, Any]], start: int, epoch: int, bad: Any) -> None:
    """The kept epoch is the one with the best val AUC of the rows (ties: the later), and its score is that one."""
    best, best_epoch = raw.get("best"), raw.get("best_epoch", 0)
    if best is not None and (not _is_number(best) or not math.isfinite(best)):
        raise bad(f"best {best!r} is not a finite number")
    if not _is_int(best_epoch) or not 0 <= best_epoch <= epoch:
        raise bad(f"best_epoch {best_epoch!r} is not from 0 to epoch {epoch}")
    finite: list[tuple[float, int]] = []
    for row in rows:
        score = row.get("val_auc")
        if _is_number(score) and math.isfinite(score):
            finite.append((float(score), int(row["epoch"])))
    if not finite:
        return
    top = max(s for s, _ in finite)
    kept = max(e for s, e in finite if s == top)
    if best is None or not math.isclose(best, top, rel_tol=0, abs_tol=1e-9) or best_epoch != kept:
        raise bad(f"it keeps epoch {best_epoch} (val AUC {best}), but its history's best is epoch {kept} ({top:.6f})")


def read_raw(path: Path) -> Any:
    """state.json's content, or a one-line error naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedCheckpoint(
            f"checkpoint {path}: not a readable fit state ({' '.join(str(exc).split())[:200]}); run `harness clean"
            " --checkpoints` to drop it and train the run anew"
        ) from None


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]  # type: ignore[arg-type]
