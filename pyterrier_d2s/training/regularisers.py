"""Regularisers of the generalisation gap (issue 10): options of :class:`TrainConfig`, all off by default.

On a few hundred pairs the head fits its training captions (R@1 0.97 x dense there) but not unseen images
(0.5-0.65 x). These are the standard remedies, each measured in the README ("The recipe"):

* :func:`dropout_mask` / :func:`perturb_inputs`: dropout on the hidden vector ``LN(W1 z)`` and Gaussian
  noise or dropout on the student's input vectors (the teacher scores the clean vectors), training steps only;
* :class:`WeightAverage`: an exponential moving average of the weights, validated and returned instead of the
  last step's weights;
* :func:`l2sp_penalty`: an L2 pull of W1 and W2 toward their start (L2-SP), since the text-space start
  generalises better than the trained head.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["WeightAverage", "dropout_mask", "l2sp_penalty", "perturb_inputs"]


def dropout_mask(
    shape: tuple[int, ...] | torch.Size, p: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Inverted-dropout multipliers: 0 with probability ``p``, else ``1 / (1 - p)`` (mean 1)."""
    keep = torch.rand(shape, generator=generator, device=device) >= p
    return keep.float() / (1.0 - p)


def perturb_inputs(
    z: torch.Tensor, noise: float, drop: float, generator: torch.Generator | None
) -> torch.Tensor:
    """``z`` with dropout ``drop`` on its coordinates, then Gaussian noise of about norm ``noise`` (standard
    deviation ``noise / sqrt(d)`` per coordinate) added; ``z`` itself when both are 0."""
    if drop:
        z = z * dropout_mask(z.shape, drop, generator, z.device).to(z.dtype)
    if noise:
        gauss = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z = z + gauss * (noise / z.shape[1] ** 0.5)
    return z


def l2sp_penalty(
    params: list[torch.Tensor], starts: list[torch.Tensor], weights: list[float]
) -> torch.Tensor | None:
    """``Σ_i weights[i] · ||params[i] - starts[i]||²`` over the terms with a non-zero weight; ``None`` if none."""
    total = None
    for p, p0, w in zip(params, starts, weights, strict=True):
        if w:
            term = w * (p.float() - p0.float()).pow(2).sum()
            total = term if total is None else total + term
    return total


class WeightAverage:
    """An exponential moving average of a module's parameters: after each step
    ``avg ← decay · avg + (1 - decay) · current``, starting from the module's weights when made.

    :attr:`module` is a copy of the model that holds the average (its buffers are the model's at the start).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), not {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, cur in zip(self.module.parameters(), model.parameters(), strict=True):
            avg.lerp_(cur.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
