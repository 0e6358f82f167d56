"""results/submission.csv and its history: every replacement says what replaced what, and keeps the one it replaced.

The file is only ever replaced whole and validated (data.submission.write_submission), and beside it
`results/submissions/current.json` names the run it came from and its scores, so the next replacement can say what
it replaces. Each replaced file is kept as `results/submissions/<time>-<run>.csv`. A clocked command (`--deadline`)
offers every finished run: it replaces the file only when it scores better on the same validation images, so
from the first finished model on the file always holds the best so far, and a kill -9 at any moment leaves a valid
one (each write is one atomic rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.atomic import atomic_path, write_text
from harness.data.submission import expected_test_ids, read_submission, write_submission
from harness.errors import HarnessError
from harness.store.runs import RunRecord

HISTORY = "submissions"
CURRENT = "current.json"


@dataclass(frozen=True)
class Pick:
    """The run a submission file came from, and what it scored on which validation images."""

    run_id: str
    val_auc: float | None
    val_accuracy: float | None
    val_key: str
    digest: str = ""  # of the submission file written, so a file changed since is not taken for this pick
    source: str = ""  # of the run's own submission it was copied from: a run's file changed since is copied again

    def text(self) -> str:
        scores = ", ".join(
            f"{name} {value:.4f}"
            for name, value in (("val AUC", self.val_auc), ("val acc", self.val_accuracy))
            if value is not None and math.isfinite(value)
        )
        return f"run {self.run_id} ({scores or 'no validation score'})"


def digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()


class SubmissionKeeper:
    """Writes `<results>/submission.csv` (or another `target`) from runs' own submissions, one line per change."""

    def __init__(
        self, results: Path, say: Callable[[str], None], target: Path | None = None, by: str = "val_auc"
    ) -> None:
        self.results = Path(results)
        self.target = Path(target) if target is not None else self.results / "submission.csv"
        self.say = say
        self.by = by
        self.history = self.results / HISTORY
        self._expected: dict[str, list[str]] = {}

    @property
    def _current_file(self) -> Path:
        name = CURRENT if self.target.name == "submission.csv" else f"{self.target.stem}.json"
        return self.history / name

    def current(self) -> Pick | None:
        """The pick behind the file now, or None when there is no file or it is not the one last written here."""
        if not self.target.is_file():
            return None
        try:
            raw = json.loads(self._current_file.read_text())
            raw.pop("file", None)
            pick = Pick(**raw)
        except (OSError, ValueError, TypeError):
            return None
        return pick if pick.digest == digest(self.target) else None

    def expected_ids(self, dataset: str | None) -> list[str]:
        key = str(dataset)
        if key not in self._expected:
            self._expected[key] = expected_test_ids(dataset)
        return self._expected[key]

    def better(self, record: RunRecord, val_key: str) -> tuple[bool, str]:
        """Whether `record` should replace the current file, and the words that say why."""
        now = self.current()
        if now is None:
            return True, "no earlier submission" if not self.target.exists() else "replacing a file of unknown origin"
        if now.run_id == record.run_id:
            return True, "the same run, updated"
        if now.val_key != val_key:
            return True, f"replacing {now.text()}, validated on other images (not comparable)"
        mine = getattr(record, self.by)
        theirs = getattr(now, self.by)
        if theirs is None or not math.isfinite(theirs) or (mine is not None and mine > theirs):
            return True, f"replaces {now.text()}"
        return False, f"keeps {now.text()}"

    def holds(self, run_id: str, source: Path) -> bool:
        """Whether the file already is run `run_id`'s submission `source`, unchanged since it was copied (a leg
        that kept its best epoch predicts the same file again: nothing to write, nothing to say)."""
        now = self.current()
        return now is not None and now.run_id == run_id and source.is_file() and now.source == digest(source)

    def offer(self, record: RunRecord, val_key: str, source: Path | None = None) -> bool:
        """Write `record`'s submission if it beats the current one on the same validation images; True if written."""
        wanted, _ = self.better(record, val_key)
        if not wanted or self.holds(record.run_id, Path(source or record.submission or "")):
            return False
        self.write(record, val_key, source)
        return True

    def write(self, record: RunRecord, val_key: str, source: Path | None = None, note: str = "") -> Path:
        """Replace the file with `record`'s submission (validated against its test set). Every file written is kept
        in the history too, so the one it replaces is there already (or is copied there first, if it came from
        elsewhere), and `index.csv` there says when each was written, from which run, with which scores."""
        source = Path(source or record.submission or "")
        if not source.is_file():
            raise HarnessError(f"run {record.run_id} has no submission file at {source}")
        expected = self.expected_ids(record.dataset)
        checked = read_submission(source, expected)
        with self._locked():
            _, why = self.better(record, val_key)
            previous = self.prepare()
            write_submission(checked, self.target, expected)
            self.written(record, val_key, previous, why + note, source)
        return self.target

    def prepare(self) -> Path | None:
        """Before the file is replaced: where the current one is kept (None: there is none)."""
        now = self.current()
        return self._history_file(now) if now is not None else self._keep_unknown()

    def written(
        self, record: RunRecord, val_key: str, previous: Path | None, why: str, source: Path | None = None
    ) -> None:
        """After the file was replaced with `record`'s submission: its pick, its copy in the history, the line."""
        copied = digest(source) if source is not None and source.is_file() else ""
        pick = Pick(record.run_id, record.val_auc, record.val_accuracy, val_key, digest(self.target), copied)
        kept = self.history / f"{time.strftime('%Y%m%d-%H%M%S')}-{record.run_id}.csv"
        with atomic_path(kept) as tmp:
            tmp.write_bytes(self.target.read_bytes())
        write_text(self._current_file, json.dumps({**asdict(pick), "file": kept.name}, indent=2))
        self._log(pick, kept)
        where = f"; the previous one is kept as {previous}" if previous else ""
        self.say(f"{self.target}: {pick.text()}, {why}{where}")

    def _history_file(self, pick: Pick) -> Path | None:
        try:
            name = json.loads(self._current_file.read_text()).get("file")
        except (OSError, ValueError):
            return None
        return self.history / name if name and (self.history / name).is_file() else None

    def _keep_unknown(self) -> Path | None:
        """A file this keeper did not write (an older harness, a copy by hand): kept before it is replaced."""
        if not self.target.is_file():
            return None
        kept = self.history / f"{time.strftime('%Y%m%d-%H%M%S')}-unknown.csv"
        with atomic_path(kept) as tmp:
            tmp.write_bytes(self.target.read_bytes())
        return kept

    def _log(self, pick: Pick, kept: Path) -> None:
        index = self.history / "index.csv"
        row = f"{time.time():.3f},{pick.run_id},{pick.val_auc},{pick.val_accuracy},{kept.name},{self.target.name}\n"
        with open(index, "a", encoding="utf-8") as handle:
            if handle.tell() == 0:
                handle.write("time,run,val_auc,val_accuracy,file,target\n")
            handle.write(row)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Several processes of one search on one machine offer their trials: one writes at a time."""
        self.history.mkdir(parents=True, exist_ok=True)
        with open(self.history / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
