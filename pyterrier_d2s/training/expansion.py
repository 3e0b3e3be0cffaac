"""Probabilistic expansion control (paper Algorithm 1 and Eq. 6).

A caption's sparse vector may always use its own tokens. Any other token k ("expansion") of caption i is kept
in a training step iff ``E_C(i) * E_k == 1`` with

* ``E_C(i) ~ Ber(p_c)``: caption level, drawn independently **for every caption** at every step;
* ``E_k ~ Ber(p_k)``: word level, drawn for every vocabulary entry at every step (shared by the captions of
  the step, as Algorithm 1 draws it), starting from ``p_k = 1 - df_k`` so frequent terms expand least.

After each epoch ``p_c += 1/epochs`` and ``p_k += df_k/epochs`` (capped at 1), so both reach 1 at the end.
Modes (Table 2): ``"0"`` never expand, ``"1"`` always expand, ``"c"`` caption level only, ``"c+w"`` both.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["EXPANSION_MODES", "ExpansionControl"]

EXPANSION_MODES = ("0", "1", "c", "c+w")


class ExpansionControl:
    """Schedules and draws the expansion masks of one training run.

    Args:
        mode: one of ``"0"``, ``"1"``, ``"c"``, ``"c+w"``.
        epochs: number of training epochs (the schedules step by ``1/epochs``).
        df: normalised document frequency of every vocabulary token over the training captions (|V|).
    """

    def __init__(self, mode: str, epochs: int, df: np.ndarray | torch.Tensor):
        if mode not in EXPANSION_MODES:
            raise ValueError(f"exp must be one of {EXPANSION_MODES}, not {mode!r}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, not {epochs}")
        df_t = torch.as_tensor(np.asarray(df, dtype=np.float32))
        if df_t.ndim != 1 or bool(((df_t < 0) | (df_t > 1)).any()):
            raise ValueError("df must be a 1-d array of normalised document frequencies in [0, 1]")
        self.mode = mode
        self.epochs = epochs
        self.df = df_t

    def caption_prob(self, epoch: int) -> float:
        """p_c during ``epoch`` (0-based): 0 at the start, +1/epochs after each epoch."""
        if self.mode == "0":
            return 0.0
        if self.mode == "1":
            return 1.0
        return min(1.0, epoch / self.epochs)

    def word_probs(self, epoch: int) -> torch.Tensor:
        """p_k during ``epoch`` (0-based): 1 - df_k at the start, +df_k/epochs after each epoch."""
        if self.mode != "c+w":
            return torch.ones_like(self.df)
        return torch.clamp(1.0 - self.df + epoch * self.df / self.epochs, max=1.0)

    def mask(self, own: torch.Tensor, epoch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The 0/1 mask (B x |V|) of caption terms allowed in this step.

        Args:
            own: B x |V| 0/1 tensor, 1 where the token occurs in the caption.
            epoch: the current epoch (0-based), which sets p_c and p_k.
            generator: the random source, on ``own``'s device (keep one per run for reproducible resumes).
                The draws happen on that device, so a GPU step never waits for the host.
        """
        p_c = torch.full((1, 1), self.caption_prob(epoch), device=own.device)
        return self.draw(own, p_c, self.word_probs(epoch).to(own.device), generator)

    def draw(
        self,
        own: torch.Tensor,
        p_c: torch.Tensor,
        p_k: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """:meth:`mask` with the probabilities given as tensors on ``own``'s device.

        ``p_c`` (one element) and ``p_k`` (|V|) are read when the kernels run, so a captured CUDA graph
        follows the schedule when the trainer updates them in place between replays.
        """
        if self.mode == "1":
            return torch.ones_like(own)
        if self.mode == "0":
            return own
        n, v = own.shape
        # U < p is Bernoulli(p), exact at p = 0 and p = 1 since U is in [0, 1)
        e_c = torch.rand((n, 1), device=own.device, generator=generator) < p_c.reshape(1, 1)
        if self.mode == "c+w":
            e_w = torch.rand((1, v), device=own.device, generator=generator) < p_k.reshape(1, v)
            expand = e_c & e_w
        else:
            expand = e_c.expand(n, v)
        return torch.maximum(own, expand.to(own.dtype))
