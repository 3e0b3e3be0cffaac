"""Probabilistic expansion control (paper Algorithm 1 and Eq. 6).

Token k of caption i ("expansion" when k is not one of the caption's own tokens) is kept in a training step
iff its Bernoulli draws are 1:

* ``E_C ~ Ber(p_c)``: caption level. Algorithm 1 draws it in the batch loop, outside EXPAND's loop over the
  captions, and the text says "we sample the values of E per batch": one draw per batch is the default
  (``caption_draw="batch"``); ``"caption"`` draws one per caption instead.
* ``E_k ~ Ber(p_k)``: word level, drawn for every vocabulary entry per batch (shared by its captions),
  starting from ``p_k = 1 - df_k`` so frequent terms expand least.

An expansion term survives iff ``E_C * E_k = 1``. A caption's own token is always kept by default; EXPAND's
literal reading multiplies own tokens by ``E_k`` too (``own_terms="word-draw"``), which drops frequent own
words ("a", "of") early in training.

Both schedules rise linearly after each epoch and reach 1 in the final epoch, as the paper states ("until it
reaches a maximum value of one in the final epoch"): ``p_c = e/(E-1)`` and ``p_k = 1 - df_k + e·df_k/(E-1)``
in epoch ``e`` (0-based) of ``E`` — Eq. 6's steps of ``1/E`` would stop one step short of 1.
Modes (Table 2): ``"0"`` never expand, ``"1"`` always expand, ``"c"`` caption level only, ``"c+w"`` both.
"""

from __future__ import annotations

import numpy as np
import torch

from ..head import EXPANSION_MODES

__all__ = ["CAPTION_DRAWS", "EXPANSION_MODES", "OWN_TERMS", "ExpansionControl"]

CAPTION_DRAWS = ("batch", "caption")
OWN_TERMS = ("keep", "word-draw")


class ExpansionControl:
    """Schedules and draws the expansion masks of one training run.

    Args:
        mode: one of ``"0"``, ``"1"``, ``"c"``, ``"c+w"``.
        epochs: number of training epochs (the schedules reach 1 in the last one).
        df: normalised document frequency of every output token over the training captions.
        caption_draw: ``"batch"`` (one ``E_C`` per batch, Algorithm 1) or ``"caption"`` (one per caption).
        own_terms: ``"keep"`` (own tokens always kept) or ``"word-draw"`` (own tokens multiplied by ``E_k``,
            EXPAND's literal reading; only differs in mode ``"c+w"``).
    """

    def __init__(
        self,
        mode: str,
        epochs: int,
        df: np.ndarray | torch.Tensor,
        caption_draw: str = "batch",
        own_terms: str = "keep",
    ):
        if mode not in EXPANSION_MODES:
            raise ValueError(f"exp must be one of {EXPANSION_MODES}, not {mode!r}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, not {epochs}")
        if caption_draw not in CAPTION_DRAWS:
            raise ValueError(f"caption_draw must be one of {CAPTION_DRAWS}, not {caption_draw!r}")
        if own_terms not in OWN_TERMS:
            raise ValueError(f"own_terms must be one of {OWN_TERMS}, not {own_terms!r}")
        df_t = torch.as_tensor(np.asarray(df, dtype=np.float32))
        if df_t.ndim != 1 or bool(((df_t < 0) | (df_t > 1)).any()):
            raise ValueError("df must be a 1-d array of normalised document frequencies in [0, 1]")
        self.mode = mode
        self.epochs = epochs
        self.df = df_t
        self.caption_draw = caption_draw
        self.own_terms = own_terms

    def _progress(self, epoch: int) -> float:
        return 1.0 if self.epochs == 1 else min(1.0, epoch / (self.epochs - 1))

    def caption_prob(self, epoch: int) -> float:
        """p_c during ``epoch`` (0-based): 0 in the first epoch, rising linearly to 1 in the last."""
        if self.mode == "0":
            return 0.0
        if self.mode == "1":
            return 1.0
        return self._progress(epoch) if self.epochs > 1 else 0.0

    def word_probs(self, epoch: int) -> torch.Tensor:
        """p_k during ``epoch`` (0-based): 1 - df_k in the first epoch, rising linearly to 1 in the last."""
        if self.mode != "c+w":
            return torch.ones_like(self.df)
        t = self._progress(epoch) if self.epochs > 1 else 0.0
        return torch.clamp(1.0 - self.df + t * self.df, max=1.0)

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
        rows = n if self.caption_draw == "caption" else 1
        # U < p is Bernoulli(p), exact at p = 0 and p = 1 since U is in [0, 1)
        e_c = torch.rand((rows, 1), device=own.device, generator=generator) < p_c.reshape(1, 1)
        if self.mode == "c+w":
            e_w = torch.rand((1, v), device=own.device, generator=generator) < p_k.reshape(1, v)
            expand = (e_c & e_w).to(own.dtype)
            if self.own_terms == "word-draw":
                return torch.where(own > 0, e_w.to(own.dtype), expand)
        else:
            expand = e_c.expand(rows, v).to(own.dtype)
        return torch.maximum(own, expand)
