"""`harness search --deadline`: an Optuna study run on a wall clock, by the policy of tuning.clock_plan.

Each step is one leg of training under the study lock's decision: a new candidate's first rung (an Optuna trial,
told its rung-1 score, so TPE models the lowest fidelity), or a trial going on from its checkpoint to a higher rung
under its own run id (its history goes on; nothing is trained twice). The command's clock covers everything; a leg
stops inside an epoch when only the endgame's reserve is left. After every leg that beats the submission so far,
`results/submission.csv` is replaced by it (ranking.keeper). The endgame then runs once: in this process, or, with
several processes on one study, in the last one to finish.

Over 350 lines because a leg's decision, its training and its bookkeeping share the study lock and the measured
speeds; the decisions alone (testable without Keras) are in tuning.clock_plan, the endgame in tuning.endgame.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from harness.clock import Deadline, minutes_text
from harness.config import RunSpec
from harness.cost import architecture_cost
from harness.errors import HarnessError
from harness.ranking.keeper import SubmissionKeeper
from harness.run_records import new_run_id
from harness.store.liveness import RunHeartbeat
from harness.store.runs import RunRecord
from harness.training.speed import Speed, from_records, probe, sized_to
from harness.tuning.clock_plan import (
    HORIZON,
    SINGLE_RUN_PASSES,
    Clock,
    Ladder,
    Policy,
    Step,
    Trial,
    one_run,
)
from harness.tuning.endgame import Endgame, run_endgame
from harness.tuning.space import InvalidConfiguration, Sample
from harness.tuning.study_lock import StudyLock
from harness.tuning.trials import TrialRunner

# Optuna warns that heartbeats are meant for Study.optimize; here each trial's heartbeat is beaten by hand (a leg is
# not an optimize call), which is what its heartbeat-based recovery needs.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)

CLOCK_ATTR = "harness_clock"  # the study's ladder: a clocked study keeps its virtual epoch for life
RUNGS = tuple(3**k for k in range(9))  # 1, 3, ..., 6561 virtual epochs: where trials are validated
MAX_SKIPS = 20  # proposals in a row too costly for the clock: the tuner is asked no more
MARGIN = 0.01  # of the clock, kept free at the very end (a last write, the summary)


@dataclass
class ClockedOutcome:
    """What a clocked session did: its lines (the clock's decisions), the endgame, and the trial lines' results."""

    lines: list[str] = field(default_factory=list)
    endgame: Endgame | None = None
    legs: int = 0
    budget: str = ""  # the trials' budget in words


class ClockedSearch:
    """One process's share of a clocked study (see the module docstring)."""

    def __init__(
        self,
        trials: TrialRunner,
        study: optuna.Study,
        storage_url: str,
        deadline: Deadline,
        total: int,
        portfolio: list[dict[str, Any]],
        first: dict[str, Any] | None = None,
        run_endgame: bool = True,
        keep_checkpoints: bool = False,
    ) -> None:
        self.trials = trials
        self.runner = trials.runner
        self.store = trials.runner.store
        self.study = study
        self.name = study.study_name
        self.lock = StudyLock(storage_url, self.name)
        self.deadline = deadline
        self.total = total
        self.portfolio = portfolio
        self.owns_endgame = run_endgame
        self.first = first
        self.keep_checkpoints = keep_checkpoints
        self.console = trials.console
        self.keeper = SubmissionKeeper(self.runner.results_dir, self._say)
        self.outcome = ClockedOutcome()
        self.overheads: list[float] = []
        self.skips = 0
        self.ladder: Ladder | None = None
        self.speed: Speed | None = None
        self.first_gmacs = 0.0

    def _say(self, line: str) -> None:
        self.outcome.lines.append(line)
        self.console.print(line, highlight=False, soft_wrap=True)

    # --- set-up ---------------------------------------------------------------------------------------------------

    def _first_spec(self) -> tuple[RunSpec, Sample]:
        """The spec of the study's first point (the space's, else one draw of the tuner), as rung 1 trains it."""
        from harness.tuning.space import FixedSuggest

        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        params = self.first or (waiting[0].params if waiting else None)
        sample = self.trials.space(FixedSuggest(params)) if params else self._any_sample()
        return self.leg_spec(self.trials.spec(sample, 0), 1), sample

    def _any_sample(self) -> Sample:
        sampler = optuna.samplers.RandomSampler(seed=self.trials.settings.seed)
        scratch = optuna.create_study(sampler=sampler)
        for _ in range(50):
            try:
                return self.trials.space(scratch.ask())
            except InvalidConfiguration:
                continue
        raise HarnessError(f"study {self.name}: the space gave no buildable point in 50 draws")

    def measure(self) -> None:
        """This machine's speed on the first point (from the store's earlier runs, else a probe of a few batches),
        and the study's ladder (kept from its first clocked session)."""
        spec, sample = self._first_spec()
        gmacs = float(sample.derived.get("gmacs") or architecture_cost(spec.architecture, **spec.arch_kwargs).gmacs)
        self.first_gmacs = gmacs
        split = self.runner.splits_for(spec)[0]
        known = from_records(self.store.runs(), spec, socket.gethostname(), _backend())
        if known is not None and known.images_per_second > 0:
            self.speed = dataclasses.replace(known, gmacs=gmacs)
        else:
            data = self.runner.dataset.train
            assert data.labels is not None  # the training set is labelled
            self.speed = probe(spec, data.images, split.train, data.labels, gmacs)
        stored = self.study.user_attrs.get(CLOCK_ATTR)
        if stored:
            self.ladder = Ladder(int(stored["images"]), int(stored.get("eta", 3)))
        else:
            self.ladder = Ladder.sized(
                self.speed.images_per_second, self.deadline.seconds, len(split.train), spec.training.batch_size
            )
            self.study.set_user_attr(CLOCK_ATTR, {"images": self.ladder.images, "eta": self.ladder.eta})
        self.outcome.budget = f"rungs of 1, 3, 9, ... virtual epochs of {self.ladder.images:,} images, on the clock"

    def ladder_line(self) -> str:
        """What measure() found, said once the ladder is the regime (the one-run regime has a line of its own)."""
        assert self.ladder is not None and self.speed is not None
        first = self.ladder.images / self.speed.images_per_second
        return (
            f"clock {minutes_text(self.deadline.seconds)}: {self.speed.images_per_second:,.0f} img/s for the first"
            f" point ({self.speed.source}); a virtual epoch is {self.ladder.images:,} images (~{first:.0f} s of it),"
            f" rungs at 1, 3, 9, ... virtual epochs; no candidate starts whose first rung is predicted above"
            f" {0.1 * self.deadline.seconds:.0f} s"
        )

    def enqueue_portfolio(self) -> None:
        """The space's neighbours of its first point, cheapest first, queued once (under the lock) after it."""
        if not self.portfolio or self.study.user_attrs.get("harness_portfolio"):
            return
        assert self.speed is not None
        costed = []
        for point in self.portfolio:
            seconds = self.rung_seconds(self._sample_of(point))
            costed.append((seconds if seconds is not None else math.inf, point))
        for _, point in sorted(costed, key=lambda c: c[0]):
            self.study.enqueue_trial(point, skip_if_exists=True)
        self.study.set_user_attr("harness_portfolio", len(costed))

    def _sample_of(self, point: dict[str, Any]) -> Sample | None:
        from harness.tuning.space import FixedSuggest

        try:
            return self.trials.space(FixedSuggest(point))
        except (InvalidConfiguration, HarnessError):
            return None

    # --- costs ----------------------------------------------------------------------------------------------------

    def speed_of(self, sample: Sample) -> Speed:
        assert self.speed is not None
        gmacs = sample.derived.get("gmacs")
        if gmacs is None:
            gmacs = architecture_cost(sample.architecture, **sample.arch_kwargs).gmacs
        return self.speed.carried_to(float(gmacs), sample.architecture)

    def epoch_seconds(self, speed: Speed) -> float:
        """One virtual epoch at `speed`, its validation included."""
        assert self.ladder is not None
        n_val = len(self.runner.splits_for(self._base_spec())[0].val)
        return speed.seconds_for(self.ladder.images) + speed.predict_seconds_for(n_val)

    def rung_seconds(self, sample: Sample | None) -> float | None:
        if sample is None:
            return None
        return self.epoch_seconds(self.speed_of(sample)) + self.overhead()

    def overhead(self) -> float:
        return float(pd.Series(self.overheads).median()) if self.overheads else 15.0

    def _base_spec(self) -> RunSpec:
        return RunSpec("cnn", {}, self.trials.settings.training, self.trials.settings.data)

    def reserve(self, leg: Step | None = None) -> float:
        """What the endgame needs, sized from measurements: the best trial's cooldown (for the epochs it will have
        after `leg`, when the leg trains it), TTA and an ensemble's test predictions, and the clock's margin."""
        assert self.speed is not None
        margin = max(MARGIN * self.deadline.seconds, 5.0)  # every process leaves it: whichever runs the endgame has it
        best = self.policy().best()
        n_val = len(self.runner.splits_for(self._base_spec())[0].val)
        n_test = len(self.runner.dataset.test)
        predicting = self.speed.predict_seconds_for(n_test * 2 + (n_val + n_test) * 4)  # TTA 4, two more members
        cooling = 0.0
        if best is not None:
            epochs = max(best.epochs, leg.epochs if leg is not None and leg.key == best.key else 0)
            cooling = best.cooldown_seconds(epochs) + self.overhead()
        return min(cooling + predicting + margin, 0.5 * self.deadline.seconds)

    # --- the table ------------------------------------------------------------------------------------------------

    def records(self) -> list[RunRecord]:
        return [
            r
            for r in self.store.runs(study=self.name)
            if r.origin == "search" and r.epochs_run != 0 and r.status in ("complete", "running", "failed")
        ]

    def policy(self) -> Policy:
        assert self.ladder is not None
        trials = []
        for record in self.records():
            epochs = int(record.epochs_run or 0)
            rows = _history(record)
            scores = {int(e): float(v) for e, v in rows.items() if self.ladder.is_rung(int(e)) and math.isfinite(v)}
            if record.status == "complete" and epochs and epochs in rows:
                scores[epochs] = float(rows[epochs])  # a partial leg's end: the best trial's latest score
            spent = float(record.seconds or 0.0)
            per_epoch = spent / epochs if epochs else self.epoch_seconds(self.speed or Speed(1, 0, ""))
            trials.append(
                Trial(
                    record.run_id,
                    epochs,
                    scores,
                    per_epoch,
                    spent,
                    record.status == "running",
                    record.status == "failed",
                )
            )
        return Policy(self.ladder, trials)

    def clock(self, policy: Policy) -> Clock:
        best = policy.best()
        spent = sum(t.seconds_spent for t in policy.trials)
        exploring = sum(t.seconds_spent for t in policy.trials if t is not best)
        left = self.deadline.left() - self.reserve()
        return Clock(left=left, total=self.deadline.seconds, overhead=self.overhead(), spent_training=spent,
                     spent_exploring=exploring, passes=self.passes())  # fmt: skip

    def passes(self) -> float:
        """Passes of the first point over the training set that this session's whole clock holds."""
        assert self.speed is not None
        n_train = len(self.runner.splits_for(self._base_spec())[0].train)
        first = self.speed.carried_to(self.first_gmacs) if self.first_gmacs else self.speed
        return self.deadline.seconds * first.images_per_second / max(n_train, 1)

    def next_candidate_seconds(self) -> float | None:
        """The predicted first rung of the next new candidate: a queued portfolio point's own, else the first
        point's (the tuner's proposals are costed once drawn); None once no more candidates may start."""
        counted = sum(t.state.is_finished() for t in self.study.get_trials(deepcopy=False))
        if counted >= self.total or self.skips >= MAX_SKIPS:
            return None
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        sample = self._sample_of(waiting[0].params) if waiting else None
        seconds = self.rung_seconds(sample) if sample is not None else None
        if seconds is None:
            seconds = self.rung_seconds(self._first_spec()[1])
        return seconds

    # --- the loop -------------------------------------------------------------------------------------------------

    def run(self) -> ClockedOutcome:
        with self.lock:
            if not self.study.get_trials(deepcopy=False) and self.first is not None:
                self.study.enqueue_trial(self.first)  # under the lock: of several processes, one queues it
            self.measure()
            alone = one_run(self.passes()) and not self.records()
            if not alone:  # the one-run regime says what it does in its own line
                self._say(self.ladder_line())
                self.enqueue_portfolio()
        self.runner.deadline = self.deadline
        self.runner.reserve = self.reserve
        self.runner.predict_test = False  # a leg validates; the test set is predicted once a run is worth it
        self.runner.keep_checkpoints = True  # every trial may go on
        if alone:
            self._alone()
        while not alone:
            with self.lock:
                self.store.reap_dead()
                policy = self.policy()
                clock = self.clock(policy)
                step = policy.next_step(clock, self.next_candidate_seconds())
                if step is None:
                    break
                claimed = self._claim(step)
                # Fixed for the leg, from the epochs the best trial will have after it: its cooldown grows with them,
                # and the fit reads this after every batch (no store query there).
                held = self.reserve(step)
            if claimed is None:
                continue
            self.runner.reserve = lambda held=held: held
            self._leg(step, *claimed)
        self._finish()
        return self.outcome

    def _claim(self, step: Step) -> tuple[Any, ...] | None:
        """Take the step's trial before the lock is released: an Optuna trial for a new candidate, the run record
        (marked running) for one that goes on."""
        if step.kind in ("first", "new"):
            trial = self.study.ask()
            try:
                sample = self.trials.space(trial)
            except InvalidConfiguration as exc:
                record = self.trials.record_invalid(trial.number, dict(trial.params), str(exc))
                self.study.tell(trial, state=TrialState.PRUNED)
                self.trials.finish(trial.number, record, "pruned", time.perf_counter(), str(exc))
                return None
            seconds = self.rung_seconds(sample) or 0.0
            cap = 0.1 * self.deadline.seconds
            if step.kind == "new" and seconds > cap:
                self.skips += 1
                why = (
                    f"skipped: its first rung is predicted to take {seconds:.0f} s, over 10% of the clock ({cap:.0f} s)"
                )
                self._say(f"{self.name} #{trial.number} {sample.architecture} {sample.derived.get('gmacs', '?')}"
                          f" GMACs {why}")  # fmt: skip
                self.study.set_user_attr(f"skipped_{trial.number}", why)
                self.study.tell(trial, state=TrialState.PRUNED)
                return None
            self.skips = 0
            return ("new", trial, sample)
        record = self.store.get(step.key or "")
        if record.status != "complete":
            return None
        self.store.update(record.run_id, status="running", host=socket.gethostname(), pid=_pid())
        return ("more", record)

    def _alone(self) -> None:
        """A clock too short to share (clock_plan.SINGLE_RUN_PASSES): the first point trains alone, its epochs sized
        to the clock less the margin, on its own schedule and validated every epoch; the endgame then has what the
        last whole epoch leaves (TTA where it fits and gains)."""
        with self.lock:
            claimed = self._claim(Step("first", None, 1, "the first point alone"))
        if claimed is None:
            return
        _, trial, sample = claimed
        margin = max(MARGIN * self.deadline.seconds, 5.0)
        share = self.deadline.until(margin)
        spec, line = sized_to(self.trials.spec(sample, trial.number), self.runner, share, self.speed)
        self._say(
            f"clock {minutes_text(self.deadline.seconds)}: it holds {self.passes():.1f} passes of the first point"
            f" over the training images, fewer than {SINGLE_RUN_PASSES}: too few to share among candidates (each"
            f" would be under-trained), so the first point trains alone; {line}"
        )
        self.runner.reserve = lambda: margin
        self.outcome.budget = "the first point alone, its epochs sized to the clock"
        started = time.perf_counter()
        record = self._train_new(trial, sample, spec)
        if record.status == "complete" and record.val_auc is not None:
            self.study.tell(trial, float(record.val_auc))
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        self.outcome.legs += 1
        status = "complete" if record.status == "complete" else "failed"
        done = int(record.epochs_run or 0)
        note = f"the first point alone: {done} epoch{'s' if done != 1 else ''} sized to the clock"
        self.trials.finish(trial.number, record, status, started, note if status == "complete" else record.error or "")

    def _train_new(self, trial: Any, sample: Sample, spec: RunSpec) -> RunRecord:
        """A new candidate's run, its trial's heartbeat beating while it trains."""
        params = dict(trial.params)
        params = {**params, "derived": sample.derived} if sample.derived else params
        run_id = new_run_id(spec.architecture)
        trial.set_user_attr("run_id", run_id)
        storage: Any = self.study._storage  # an RDBStorage: the harness opens no other (optuna_storage)
        with RunHeartbeat(lambda: storage.record_heartbeat(trial._trial_id)):
            return self.runner.run(spec, hyperparameters=params, run_id=run_id)

    def _leg(self, step: Step, kind: str, *what: Any) -> None:
        started = time.perf_counter()
        if kind == "new":
            trial, sample = what
            record = self._train_new(trial, sample, self.leg_spec(self.trials.spec(sample, trial.number), step.epochs))
            score = _history(record).get(step.epochs) if record.status == "complete" else None
            if record.status == "complete" and score is not None and record.epochs_run == step.epochs:
                self.study.tell(trial, float(score))
            else:
                self.study.tell(trial, state=TrialState.PRUNED if record.status == "complete" else TrialState.FAIL)
            number = trial.number
        else:
            (record,) = what
            spec = RunSpec.from_dict(record.spec)
            spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, epochs=step.epochs))
            before = int(record.epochs_run or 0)
            record = self.runner.extend(record.run_id, spec)
            number = int(record.trial or 0)
            trained = int(record.epochs_run or 0) - before
            self._measure_overhead(record, trained, time.perf_counter() - started)
        if kind == "new":
            self._measure_overhead(record, int(record.epochs_run or 0), time.perf_counter() - started)
        self.outcome.legs += 1
        self._learn_speed(record)
        status = record.status if record.status in ("complete", "pruned") else "failed"
        done = int(record.epochs_run or 0)
        note = f"{step.why}: {done} virtual epoch{'s' if done != 1 else ''}"
        self.trials.finish(number, record, status, started, note if status == "complete" else record.error or "")

    def _learn_speed(self, record: RunRecord) -> None:
        """A finished leg measured its model's training speed: the machine's speed is taken from it from now on
        (carried to other models by their GMACs), not from the few batches probed at the start."""
        gmacs = (record.hyperparameters or {}).get("derived", {}).get("gmacs")
        if record.status == "complete" and record.images_per_second and gmacs:
            self.speed = Speed(float(record.images_per_second), float(gmacs), f"run {record.run_id}")

    def _measure_overhead(self, record: RunRecord, epochs: int, wall: float) -> None:
        if record.status != "complete" or not epochs or not record.epochs_run:
            return
        per_epoch = float(record.seconds or 0.0) / int(record.epochs_run)
        self.overheads.append(max(0.0, wall - epochs * per_epoch))

    def leg_spec(self, spec: RunSpec, epochs: int) -> RunSpec:
        """`spec` as a leg trains it: `epochs` virtual epochs of the ladder's images, on the warmup-stable-decay
        schedule of the search (stable long past any rung; a warmup over the first virtual epoch where the point's
        recipe warms up)."""
        training = spec.training
        steps = self.ladder.steps(training.batch_size) if self.ladder is not None else None  # None: while probing
        warm = (
            1.0 if (training.warmup_epochs or training.warmup_fraction or training.lr_schedule == "one-cycle") else 0.0
        )
        training = dataclasses.replace(
            training,
            epochs=epochs,
            steps_per_epoch=steps,
            lr_schedule="wsd",
            schedule_epochs=HORIZON,
            warmup_epochs=min(warm, float(epochs)),
            warmup_fraction=0.0,
            validate_at=RUNGS,  # a trial is scored at its rungs: the epochs between them are not validated
        )
        return dataclasses.replace(spec, training=training)

    # --- the end --------------------------------------------------------------------------------------------------

    def _finish(self) -> None:
        """The endgame, once: here, unless another process still trains the study's trials (it will run it)."""
        if not self.owns_endgame:
            return
        with self.lock:
            self.store.reap_dead()
            records = self.records()
            if any(r.status == "running" for r in records):
                self._say(f"study {self.name}: other processes still train its trials; the last one runs the endgame")
                return
            done = [r for r in records if r.status == "complete"]
            if not done:
                self._say(f"study {self.name}: no trial finished before the clock ran out; no submission written")
                return
            # Under the lock, check-and-set: of several processes that end together, one runs the endgame.
            claim = f"harness_endgame_{len(done)}"
            if claim in self.study.user_attrs:
                self._say(f"study {self.name}: its endgame for these {len(done)} trials ran in another process")
                return
            self.study.set_user_attr(claim, {"host": socket.gethostname(), "pid": _pid()})
        policy = self.policy()
        best_trial = policy.best()
        assert best_trial is not None
        best = self.store.get(best_trial.key)
        others = [r for r in done if r.run_id != best.run_id]
        self.runner.reserve = None
        self.outcome.endgame = run_endgame(
            self.runner, best, others, self.deadline, self.keeper, self._say, best_trial.seconds_per_epoch,
            self.overhead(),
        )  # fmt: skip
        self._delete_checkpoints(done)

    def _delete_checkpoints(self, records: list[RunRecord]) -> None:
        """Every trial may go on only while the study runs: its checkpoint goes at the end, unless kept."""
        from harness.training.checkpoint import delete_checkpoints

        if self.keep_checkpoints:
            return
        freed = sum(delete_checkpoints(Path(r.artifacts or ""), self.runner.results_dir) for r in records)
        if freed:
            self._say(f"deleted the trials' checkpoints ({freed / 1e6:.1f} MB; --keep-checkpoints keeps them)")


def _history(record: RunRecord) -> dict[int, float]:
    """A run's val AUC after each epoch, from its history.csv (empty when it has none)."""
    path = Path(record.artifacts or "") / "history.csv"
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError):
        return {}
    if "epoch" not in frame or "val_auc" not in frame:
        return {}
    return {int(e): float(v) for e, v in zip(frame["epoch"], frame["val_auc"], strict=True)}


def _backend() -> str:
    import keras

    return str(keras.backend.backend())


def _pid() -> int:
    import os

    return os.getpid()
