"""Step and epoch schedules of a training run: the learning-rate warm-up and decay, the L1 warm-up, and from
which epoch on the best head may be chosen.

The expansion probabilities' schedule (p_c and p_k per epoch, Eq. 6) is :class:`ExpansionControl`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["StepSchedule", "first_eligible_epoch", "l1_warmup_factor", "lr_factor"]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning rate's factor at ``step`` of ``total``: linear warm-up over ``warmup`` steps from 0, then
    linear decay to 0 at ``total``."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def l1_warmup_factor(step: int, warmup_steps: int) -> float:
    """Quadratic warm-up of the L1 weight: ``min(1, step/T)^2`` (the published code's schedule)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps) ** 2


@dataclass(frozen=True)
class StepSchedule:
    """The per-step factors of one run of ``epochs`` epochs of ``steps_per_epoch`` steps.

    ``warmup_steps`` is ``int(total_steps * warmup_ratio)``; the L1 weight warms up over the same steps when
    ``l1_warmup`` is set (else its factor is 1).
    """

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    l1_warmup: bool = True

    @classmethod
    def for_run(
        cls, pairs: int, batch_size: int, epochs: int, warmup_ratio: float, l1_warmup: bool = True
    ) -> StepSchedule:
        """The schedule of ``epochs`` passes over ``pairs`` training pairs in batches of ``batch_size``."""
        steps_per_epoch = math.ceil(pairs / batch_size)
        total_steps = steps_per_epoch * epochs
        return cls(steps_per_epoch, total_steps, int(total_steps * warmup_ratio), l1_warmup)

    def lr_factor(self, step: int) -> float:
        """Factor of every base learning rate at ``step`` (0-based, counted over the whole run)."""
        return lr_factor(step, self.total_steps, self.warmup_steps)

    def l1_factor(self, step: int) -> float:
        """Factor of the L1 (or FLOPS) term of Eq. 7 at ``step``."""
        return l1_warmup_factor(step, self.warmup_steps) if self.l1_warmup else 1.0


def first_eligible_epoch(epochs: int, select_from: float, warmup_ratio: float, l1_warmup: bool) -> int:
    """First epoch (1-based) the best head may come from: after ``select_from`` of the run, and never before
    the L1 warm-up is over (a head is not sparse before), capped at the last epoch."""
    after_share = math.floor(select_from * epochs) + 1
    after_warmup = math.ceil(warmup_ratio * epochs) + 1 if l1_warmup and select_from > 0 else 1
    return min(epochs, max(after_share, after_warmup))
