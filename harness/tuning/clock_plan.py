"""How a clocked search spends its clock: the rungs every trial is scored at, what each next step would cost, and
which step to take (no Keras, no database: the decisions alone, so they can be tested on their own).

Fidelity is training images. A *virtual epoch* is a fixed number of them, chosen once per study from the measured
speed of the space's first point (about 5% of the first session's clock, at most one pass over the training set),
and a trial's rungs are 1, 3, 9, ... virtual epochs (reduction factor 3, as Hyperband and ASHA use). Every trial
trains on one warmup-stable-decay schedule whose cooldown lies beyond any rung, so at each rung all trials were
scored after the same images, on the same validation set, at the same point of their schedule: rung scores compare.
A promoted trial goes on from its checkpoint; the endgame gives the best one its cooldown.

The policy, in the order it is tried:
0. a clock that holds fewer than SINGLE_RUN_PASSES passes of the first point: that point alone, its epochs sized to
   the clock on its own schedule (no ladder, no one else), then the endgame;
1. nothing trained yet: the first point (the space's, or the tuner's first draw);
2. a trial in the top third of its rung goes on to the next rung (asynchronous successive halving, Li et al. 2020),
   from the highest rung down; one that is not the best so far only while exploring stays within its share;
3. a new candidate at rung 1: the space's portfolio of known-sound neighbours first (cheapest first), then the
   tuner's proposals; never one whose first rung is predicted to take more than 10% of the clock, and only while
   the time spent on anything but the best trial stays within the exploring share of the search (EXPLORE_SHARE,
   scaled down when the clock holds fewer than FULL_EXPLORE_PASSES passes of the first point);
4. the best trial goes on for the whole virtual epochs that the time left holds (its grown cooldown set aside);
5. stop: the endgame's reserve is all that is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ETA = 3  # the reduction factor: a third of a rung goes on to the next
VIRTUAL_EPOCH_SHARE = 0.05  # a virtual epoch: what the first point trains in this share of the first clock
FIRST_RUNG_SHARE = 0.10  # the most of the clock one new candidate's first rung may be predicted to take
EXPLORE_SHARE = 0.30  # the most of the search's training time that goes to trials other than the best ...
FULL_EXPLORE_PASSES = 20  # ... once the clock holds this many passes of the first point over the training set
# (below SINGLE_RUN_PASSES since the hour's benchmark, so today every clock that explores explores its full share);
# a shorter clock explores in proportion: splitting 6 passes among candidates leaves each under-trained (the
# first point measured 0.8958 public-test AUC after 3 passes, 0.9171 after 6, on 2 cores), so a 15-minute CPU
# clock mostly trains its best candidate, and a GPU hour, holding hundreds of passes, explores its full share.
SINGLE_RUN_PASSES = 30  # a clock that holds fewer passes than this is not split at all: the first point trains
# alone, its epochs sized to the clock on its own schedule, as `harness run --deadline` trains it; the endgame
# follows. Measured on validation (the 20,000-image sample, 2 cores): the ladder lost to that single run at 7.9
# passes (15 minutes: val AUC 0.9376 against 0.9486) and still at 27 (60 minutes: 0.9737 against 0.9803), so the
# crossover lies above 27; 30 is the round figure above what was measured, not a measured crossover.
MIN_BATCHES = 4  # a virtual epoch holds at least this many batches
COOLDOWN_SHARE = 0.2  # the best trial's cooldown: this share of its steps (Hägele et al. 2024 use 10-20%)
HORIZON = 10_000  # virtual epochs: the search schedule's length, so no rung reaches its cooldown


@dataclass(frozen=True)
class Ladder:
    """A study's fidelity unit and rungs: kept with the study, so that every session's rung scores compare."""

    images: int  # one virtual epoch
    eta: int = ETA

    def rung_after(self, epochs: int) -> int:
        """The next rung above `epochs` virtual epochs: 1, 3, 9, 27, ..."""
        rung = 1
        while rung <= epochs:
            rung *= self.eta
        return rung

    def is_rung(self, epochs: int) -> bool:
        return epochs >= 1 and self.eta ** round(math.log(epochs, self.eta)) == epochs

    def steps(self, batch_size: int) -> int:
        return max(1, math.ceil(self.images / batch_size))

    @staticmethod
    def sized(first_images_per_second: float, clock_seconds: float, n_train: int, batch_size: int) -> Ladder:
        """The virtual epoch for a study first run with `clock_seconds`: VIRTUAL_EPOCH_SHARE of it at the first
        point's measured speed, at least MIN_BATCHES batches, at most one pass over the training images."""
        wanted = VIRTUAL_EPOCH_SHARE * clock_seconds * first_images_per_second
        images = int(min(n_train, max(MIN_BATCHES * batch_size, wanted)))
        return Ladder(images=images)


@dataclass
class Trial:
    """A trial as the scheduler sees it (rebuilt from its run record and history)."""

    key: str  # its run id
    epochs: int  # virtual epochs trained so far
    scores: dict[int, float]  # rung (virtual epochs) -> validation AUC after it
    seconds_per_epoch: float  # predicted (or measured) seconds one more virtual epoch costs, validation included
    seconds_spent: float = 0.0
    busy: bool = False  # another process is training it now
    failed: bool = False

    def cooldown_seconds(self, epochs: int) -> float:
        """Its cooldown's cost once it has trained `epochs` virtual epochs (the endgame's reserve holds it)."""
        return cooldown_epochs(epochs) * self.seconds_per_epoch

    @property
    def latest(self) -> float:
        reached = [r for r in self.scores if r <= self.epochs]
        return self.scores[max(reached)] if reached else -math.inf


@dataclass(frozen=True)
class Step:
    """What to do next: train `key` (None: a new candidate) up to `epochs` virtual epochs; `partial` when that is
    short of its next rung (what the clock still holds); `why` is the line that says so."""

    kind: str  # "first", "promote", "new", "continue"
    key: str | None
    epochs: int
    why: str
    partial: bool = False


@dataclass
class Clock:
    """The time the search may still train (its end less the endgame's reserve) and the per-leg overhead."""

    left: float  # seconds the search may still train
    total: float  # the whole command's clock, seconds
    overhead: float = 15.0  # a leg's fixed cost: build or load the model, trace, save (measured as legs run)
    spent_training: float = 0.0
    spent_exploring: float = 0.0  # of which on trials other than the best
    passes: float = SINGLE_RUN_PASSES  # passes of the first point over the training set the clock holds

    @property
    def explore_share(self) -> float:
        if one_run(self.passes):
            return 0.0
        return EXPLORE_SHARE * min(1.0, max(0.0, self.passes) / FULL_EXPLORE_PASSES)


def one_run(passes: float) -> bool:
    """Whether a clock holding `passes` of the first point is too short to share among candidates."""
    return passes < SINGLE_RUN_PASSES


@dataclass
class Policy:
    """The order of steps of the module's docstring, over `trials` as they stand."""

    ladder: Ladder
    trials: list[Trial] = field(default_factory=list)

    def best(self) -> Trial | None:
        """The trial at the highest rung reached, best there (what the endgame would cool down and submit)."""
        done = [t for t in self.trials if not t.failed and t.scores]
        if not done:
            return None
        top = max(max(t.scores) for t in done)
        at_top = [t for t in done if top in t.scores]
        return max(at_top, key=lambda t: t.scores[top])

    def leg_seconds(self, trial: Trial, to: int, clock: Clock) -> float:
        return (to - trial.epochs) * trial.seconds_per_epoch + clock.overhead

    def promotable(self) -> list[tuple[int, Trial]]:
        """(rung, trial) pairs that asynchronous successive halving may promote, highest rung first."""
        out: list[tuple[int, Trial]] = []
        rungs = sorted({r for t in self.trials for r in t.scores if self.ladder.is_rung(r)}, reverse=True)
        for rung in rungs:
            scored = [t for t in self.trials if rung in t.scores and not t.failed]
            ranked = sorted(scored, key=lambda t: t.scores[rung], reverse=True)[: len(scored) // self.ladder.eta]
            out += [(rung, t) for t in ranked if t.epochs == rung and not t.busy]
        return out

    def exploring_allowed(self, clock: Clock, cost: float) -> bool:
        planned = clock.spent_training + clock.left
        return clock.spent_exploring + cost <= clock.explore_share * planned

    def next_step(self, clock: Clock, new_candidate_seconds: float | None) -> Step | None:
        """The next step, or None (the endgame's turn). `new_candidate_seconds`: the predicted first rung of the
        next new candidate (None: no candidate is left to try)."""
        live = [t for t in self.trials if not t.failed]
        if not live and new_candidate_seconds is not None:
            if new_candidate_seconds <= clock.left:
                return Step("first", None, 1, "the first candidate")
            return None
        best = self.best()
        for rung, trial in self.promotable():
            to = self.ladder.rung_after(rung)
            cost = self.leg_seconds(trial, to, clock)
            if trial is best:
                cost += self.cooldown_growth(trial, to)
            if cost > clock.left:
                continue
            if trial is best:
                return Step("promote", trial.key, to, f"the best trial goes on to rung {to}")
            if self.exploring_allowed(clock, cost):
                return Step("promote", trial.key, to, f"in the top third of rung {rung}: on to rung {to}")
        if new_candidate_seconds is not None:
            cap = FIRST_RUNG_SHARE * clock.total
            fits = new_candidate_seconds <= min(cap, clock.left)
            if fits and self.exploring_allowed(clock, new_candidate_seconds):
                return Step("new", None, 1, "a new candidate at rung 1")
        if best is not None and not best.busy:
            rung = self.ladder.rung_after(best.epochs)
            more = self.whole_epochs(best, clock, rung)
            if more:
                to = best.epochs + more
                partial = to < rung
                plural = "s" if more != 1 else ""
                held = f"the best trial goes on for the {more} whole virtual epoch{plural} the clock holds"
                why = held if partial else f"the best trial to {to}"
                return Step("continue", best.key, to, why, partial=partial)
        return None

    def cooldown_growth(self, trial: Trial, to: int) -> float:
        """What the endgame's reserve grows by when the best trial trains on to `to` epochs: its cooldown is a share
        of the whole run."""
        return trial.cooldown_seconds(to) - trial.cooldown_seconds(trial.epochs)

    def whole_epochs(self, trial: Trial, clock: Clock, up_to: int) -> int:
        """The most whole virtual epochs `trial` can add (to at most `up_to`) with the leg's overhead and the growth
        of its cooldown paid from `clock.left`. Not what is left, cut wherever: a leg stopped inside an epoch by its
        reserve counts an epoch it did not train (timed and scored as one), and a leg that has not set its grown
        cooldown aside is cut short by it, leg after leg (the 60-minute benchmark ran seven such legs of 15 s)."""
        for more in range(up_to - trial.epochs, 0, -1):
            cost = more * trial.seconds_per_epoch + clock.overhead + self.cooldown_growth(trial, trial.epochs + more)
            if cost <= clock.left:
                return more
        return 0


def cooldown_epochs(trained: int) -> int:
    """Virtual epochs of the best trial's cooldown: COOLDOWN_SHARE of the whole run, so a fifth of it decays."""
    return max(1, math.ceil(trained * COOLDOWN_SHARE / (1 - COOLDOWN_SHARE)))
