"""The clocked search's policy on its own: rungs, promotion by successive halving, the exploring share, the 10% rule
for new candidates, and the best trial going on while time is left."""

from __future__ import annotations

import pytest

from harness.tuning.clock_plan import (
    EXPLORE_SHARE,
    Clock,
    Ladder,
    Policy,
    Trial,
    cooldown_epochs,
)

pytestmark = pytest.mark.backend_free


def trial(key: str, epochs: int, scores: dict[int, float], per_epoch: float = 10.0, spent: float = 0.0) -> Trial:
    return Trial(key, epochs, scores, per_epoch, spent or epochs * per_epoch)


def test_the_ladder_is_sized_from_the_first_point_and_its_rungs_triple():
    ladder = Ladder.sized(first_images_per_second=100, clock_seconds=900, n_train=17_000, batch_size=64)
    assert ladder.images == 4_500  # 5% of 15 minutes at 100 img/s
    assert Ladder.sized(100, 3600 * 10, 17_000, 64).images == 17_000  # at most one pass
    assert Ladder.sized(100, 10, 17_000, 64).images == 4 * 64  # at least a few batches
    assert [ladder.rung_after(e) for e in (0, 1, 2, 3, 8, 9)] == [1, 3, 3, 9, 9, 27]
    assert [e for e in range(1, 30) if ladder.is_rung(e)] == [1, 3, 9, 27]
    assert ladder.steps(64) == 71


def test_the_first_step_is_the_first_candidate_if_it_fits():
    policy = Policy(Ladder(1000))
    assert policy.next_step(Clock(left=100, total=900), new_candidate_seconds=20).kind == "first"
    assert policy.next_step(Clock(left=10, total=900), new_candidate_seconds=20) is None


def test_a_third_of_a_rung_goes_on_best_first():
    policy = Policy(Ladder(1000), [trial("a", 1, {1: 0.80}), trial("b", 1, {1: 0.90}), trial("c", 1, {1: 0.85})])
    step = policy.next_step(Clock(left=500, total=900), new_candidate_seconds=20)
    assert (step.kind, step.key, step.epochs) == ("promote", "b", 3)
    # With two at the rung, a third of them is none: a new candidate comes first.
    policy = Policy(Ladder(1000), [trial("a", 1, {1: 0.80}), trial("b", 1, {1: 0.90})])
    assert policy.next_step(Clock(left=500, total=900), new_candidate_seconds=20).kind == "new"


def test_a_candidate_over_a_tenth_of_the_clock_never_starts():
    policy = Policy(Ladder(1000), [trial("a", 1, {1: 0.80})])
    step = policy.next_step(Clock(left=800, total=900), new_candidate_seconds=91)  # 10% of 900 s is 90 s
    assert step.kind == "continue" and step.key == "a"  # the best trial goes on instead


def test_exploring_stops_at_its_share_and_the_best_trial_gets_the_rest():
    explored = EXPLORE_SHARE * 1000  # of a search that trained 400 s and may train 600 s more
    trials = [trial("best", 3, {1: 0.9, 3: 0.92}, spent=400 - explored), trial("x", 1, {1: 0.8}, spent=explored)]
    clock = Clock(left=600, total=1200, spent_training=400, spent_exploring=explored)
    step = Policy(Ladder(1000), trials).next_step(clock, new_candidate_seconds=30)
    assert step.kind == "continue" and step.key == "best" and step.epochs == 9


def test_the_best_trial_goes_on_partly_when_its_next_rung_does_not_fit_and_nothing_when_no_time_is_left():
    trials = [trial("best", 3, {1: 0.9, 3: 0.92}, per_epoch=50)]
    step = Policy(Ladder(1000), trials).next_step(Clock(left=120, total=900), new_candidate_seconds=None)
    assert step.kind == "continue" and step.partial  # 6 more epochs need 300 s; it goes on for what is left
    assert step.epochs == 4  # 2 more would be 100 s, the leg's 15 and a longer cooldown (50 s): over 120 s
    assert Policy(Ladder(1000), trials).next_step(Clock(left=20, total=900), new_candidate_seconds=None) is None


def test_the_best_trial_goes_on_for_the_whole_epochs_that_fit_with_the_cooldown_they_add():
    # The 60-minute benchmark's case: 216 s left after the reserve for the cooldown of 17 epochs, 90 s an epoch. It
    # went on "for the 216 s left" towards rung 27; that leg's own reserve (the cooldown of 27 epochs) cut it after
    # 15 s, inside its epoch, and so did the six legs after it.
    clock = Clock(left=216, total=3600, overhead=15)
    step = Policy(Ladder(17_000), [trial("best", 17, {9: 0.95}, per_epoch=90)]).next_step(clock, None)
    assert (step.kind, step.epochs, step.partial) == ("continue", 19, True)

    def cost(epochs: int, more: int) -> float:  # the leg, and what its epochs add to the cooldown
        return more * 90 + 15 + (cooldown_epochs(epochs + more) - cooldown_epochs(epochs)) * 90

    for epochs in (1, 3, 8, 9, 17, 26):
        rung = Ladder(17_000).rung_after(epochs)
        for left in range(0, 3000, 37):
            step = Policy(Ladder(17_000), [trial("best", epochs, {1: 0.9}, per_epoch=90)]).next_step(
                Clock(left=left, total=3600, overhead=15), None
            )
            if step is None:
                assert cost(epochs, 1) > left, (epochs, left)  # not even one whole epoch fits
                continue
            more = step.epochs - epochs
            assert more >= 1 and cost(epochs, more) <= left, (epochs, left, step)  # it fits, cooldown and all
            assert step.epochs == rung or cost(epochs, more + 1) > left, (epochs, left, step)  # and no more does


def test_a_trial_another_process_trains_is_not_taken():
    trials = [trial("a", 1, {1: 0.80}), trial("b", 1, {1: 0.90}), trial("c", 1, {1: 0.85})]
    trials[1].busy = True
    step = Policy(Ladder(1000), trials).next_step(Clock(left=500, total=900), new_candidate_seconds=None)
    assert step is None or step.key != "b"


def test_the_cooldown_is_a_fifth_of_the_whole_run():
    assert [cooldown_epochs(n) for n in (1, 3, 4, 9, 27)] == [1, 1, 1, 3, 7]
