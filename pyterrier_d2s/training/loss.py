"""The D2S training loss (paper Eq. 7).

``L = (1 - λ)·(ℓ(I→C) + ℓ(C→I)) + λ·η·(L1(s_I) + L1(s_C))`` where ``ℓ(A→B)`` is the cross-entropy (log base 2,
as the paper writes it) of the student distribution ``softmax_b(s_A · s_B)`` against the teacher distribution
``softmax_b(z_A · z_B / τ)`` over the in-batch candidates, averaged over the batch; the teacher carries no
gradient. ``L1(s) = ||s||_1`` averaged over the batch. The L1 weight's warm-up is in :mod:`.schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "D2SLoss",
    "LossParts",
    "distillation_ce",
    "sparse_scores",
    "teacher_scores",
    "l1_norm",
    "flops_norm",
    "REGULARISERS",
]

_LN2 = math.log(2.0)


@dataclass
class LossParts:
    total: torch.Tensor
    i2c: torch.Tensor
    c2i: torch.Tensor
    l1_img: torch.Tensor
    l1_cap: torch.Tensor


def distillation_ce(student_scores: torch.Tensor, teacher_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """ℓ(A→B) from score matrices (rows = A, columns = in-batch candidates B).

    Batch mean of ``-Σ_b softmax(z_A·z_B/τ)[a, b] · log2 softmax(s_A·s_B)[a, b]``; no gradient to the teacher.
    """
    with torch.no_grad():
        teacher = torch.softmax(teacher_scores.float() / tau, dim=1)
    log_student = torch.log_softmax(student_scores.float(), dim=1) / _LN2
    return -(teacher * log_student).sum(dim=1).mean()


def sparse_scores(s_a: torch.Tensor, s_b: torch.Tensor) -> torch.Tensor:
    """``s_a · s_bᵀ`` over the columns active on both sides only (the others add exactly zero).

    The column selection pays on CPU; on a GPU the full product is cheaper than the host synchronisation
    that ``nonzero`` costs, so it is used there.
    """
    if s_a.device.type != "cpu":
        return s_a @ s_b.T
    both = ((s_a > 0).any(dim=0) & (s_b > 0).any(dim=0)).nonzero().squeeze(1)
    return s_a[:, both] @ s_b[:, both].T


def teacher_scores(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """The dense model's ``z_a · z_bᵀ`` in float32, also inside an autocast region.

    The scores are divided by τ = 0.001: bf16's 8-bit mantissa would put errors of about ±1 on the
    teacher's logits, so the product must not be autocast.
    """
    with torch.no_grad(), torch.autocast(device_type=z_a.device.type, enabled=False):
        return z_a.float() @ z_b.float().T


def l1_norm(s: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``||s||_1``; D2S weights are non-negative (log(1+ReLU)), so this is the row sum.

    Summed in float32 without an ``abs``/float copy of the B x |V| matrix (two passes less per step).
    """
    return s.sum(dim=1, dtype=torch.float32).mean()


def flops_norm(s: torch.Tensor) -> torch.Tensor:
    """SPLADE's FLOPS regulariser ``Σ_k (mean_i s_ik)²``: penalises terms active across the batch (co-activation),
    not single weights; an option beside Eq. 7's L1 (``D2SLoss(regulariser="flops")``)."""
    return (s.float().mean(dim=0) ** 2).sum()


REGULARISERS = ("l1", "flops")


class D2SLoss:
    """Eq. 7 with fixed ``tau``, ``lam`` (λ) and ``eta`` (η); ``regulariser="flops"`` swaps its L1 terms for
    :func:`flops_norm` (not the paper's; measured in the README)."""

    def __init__(self, tau: float = 1e-3, lam: float = 0.5, eta: float = 1e-3, regulariser: str = "l1"):
        if regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, not {regulariser!r}")
        self.regulariser = regulariser
        if tau <= 0:
            raise ValueError("tau must be > 0")
        if not 0.0 <= lam <= 1.0:
            raise ValueError("lam (λ) must be in [0, 1]")
        if eta < 0:
            raise ValueError("eta (η) must be >= 0")
        self.tau, self.lam, self.eta = tau, lam, eta

    def __call__(
        self,
        s_img: torch.Tensor,
        s_cap: torch.Tensor,
        z_img: torch.Tensor,
        z_cap: torch.Tensor,
        l1_factor: float = 1.0,
    ) -> LossParts:
        """Row i of each tensor belongs to pair i of the batch (an image may appear in several rows)."""
        student = sparse_scores(s_img, s_cap)  # images x captions; its transpose serves C→I
        teacher = teacher_scores(z_img, z_cap)
        i2c = distillation_ce(student, teacher, self.tau)
        c2i = distillation_ce(student.T, teacher.T, self.tau)
        norm = l1_norm if self.regulariser == "l1" else flops_norm
        l1_i, l1_c = norm(s_img), norm(s_cap)
        total = (1 - self.lam) * (i2c + c2i) + self.lam * self.eta * l1_factor * (l1_i + l1_c)
        return LossParts(total, i2c, c2i, l1_i, l1_c)
