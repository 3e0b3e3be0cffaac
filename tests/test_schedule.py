"""Step schedules (pyterrier_d2s.training.schedule) against hand-computed values."""

from __future__ import annotations

import pytest

from pyterrier_d2s.training.schedule import StepSchedule, first_eligible_epoch, lr_factor


def test_step_schedule_of_a_run():
    # 50 pairs in batches of 16: 4 steps an epoch (the last one short), 5 epochs = 20 steps, 20 % warm-up = 4
    s = StepSchedule.for_run(50, 16, 5, 0.2)
    assert (s.steps_per_epoch, s.total_steps, s.warmup_steps) == (4, 20, 4)
    # linear warm-up 0 -> 1 over 4 steps, then linear decay (20 - step) / 16 to 0
    assert [s.lr_factor(k) for k in (0, 2, 4, 12, 20, 25)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    # the L1 weight warms up quadratically over the same steps, or not at all
    assert [s.l1_factor(k) for k in (0, 2, 4, 9)] == [0.0, 0.25, 1.0, 1.0]
    assert StepSchedule.for_run(50, 16, 5, 0.2, l1_warmup=False).l1_factor(0) == 1.0
    # no warm-up: full rate at once, decaying over the whole run
    assert lr_factor(0, 10, 0) == 1.0 and lr_factor(5, 10, 0) == 0.5


@pytest.mark.parametrize(
    ("epochs", "select_from", "warmup_ratio", "l1_warmup", "first"),
    [
        (
            5,
            0.4,
            0.2,
            True,
            3,
        ),  # floor(0.4 * 5) + 1 = 3 after the share; ceil(0.2 * 5) + 1 = 2 after the warm-up
        (10, 0.0, 0.2, True, 1),  # select_from 0: every epoch is eligible
        (10, 0.1, 0.5, True, 6),  # the L1 warm-up (5 epochs) ends later than the share (1 epoch)
        (10, 0.1, 0.5, False, 2),  # without an L1 warm-up only the share counts
        (3, 0.5, 0.9, True, 3),  # capped at the last epoch
    ],
)
def test_first_eligible_epoch(epochs, select_from, warmup_ratio, l1_warmup, first):
    assert first_eligible_epoch(epochs, select_from, warmup_ratio, l1_warmup) == first
