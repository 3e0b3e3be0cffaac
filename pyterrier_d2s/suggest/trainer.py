"""Bi-encoder training for image suggestion (arXiv 2402.07736): InfoNCE over in-batch negatives.

Each step takes a batch of (query, document) pairs, scores every query against every document of the batch
(``S = Q·Dᵀ``) and minimises the cross-entropy of each query's row against its own document (the other
documents of the batch are its negatives), plus a sparsity regulariser of both sides, FLOPS (SPLADE's
``Σ_k mean_i(s_ik)²``, default) or L1, whose weight warms up quadratically (``min(1, step/T)²``) as the D2S
trainer's does: a regulariser at full weight from the first step empties the vectors before they learn
anything. AdamW, 5 epochs by default, bf16 autocast on CUDA. With a frozen backbone (the CPU-sized run)
the token states are computed once and only the heads train.

After every epoch an atomic checkpoint (``checkpoint.pt``: weights, optimiser, generator, history, config) is
written; a run started again on the same directory resumes from it and ends where an uninterrupted run would.
No PyTerrier or index here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ..training.loss import REGULARISERS, flops_norm, l1_norm
from ..training.schedule import l1_warmup_factor
from .encoders import TokenStates, token_states
from .model import SuggestBiEncoder

__all__ = ["BiEncoderTrainConfig", "BiEncoderTrainer", "SuggestPairs", "info_nce"]

logger = logging.getLogger(__name__)


def info_nce(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (natural log) of ``softmax(q·dᵀ)`` rows against the diagonal: pair i is query i's
    positive, every other document of the batch a negative."""
    scores = q.float() @ d.float().T
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(q), device=q.device))


@dataclass
class SuggestPairs:
    """Training pairs: query ``i`` is relevant to document ``i`` (its caption text and/or image vector)."""

    queries: list[str]
    captions: list[str] | None = None
    image_vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.queries)
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"{len(self.captions)} document captions for {n} queries")
        if self.image_vectors is not None and len(self.image_vectors) != n:
            raise ValueError(f"{len(self.image_vectors)} image vectors for {n} queries")
        if n < 2:
            raise ValueError(f"training needs at least 2 pairs (in-batch negatives), not {n}")


@dataclass
class BiEncoderTrainConfig:
    """Hyper-parameters of :class:`BiEncoderTrainer` (``reg_*``: the regulariser's weights, per side)."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    lr_backbone: float = 2e-5
    weight_decay: float = 0.01
    regulariser: str = "flops"
    reg_query: float = 1e-3
    reg_doc: float = 1e-3
    reg_warmup_ratio: float = 0.5  # of all steps: the regulariser's quadratic warm-up
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, not {self.regulariser!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")
        if min(self.lr, self.lr_backbone, self.reg_query, self.reg_doc) < 0:
            raise ValueError("learning rates and regulariser weights must be >= 0")


@dataclass
class _Data:
    queries: TokenStates
    captions: TokenStates | None
    images: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class TrainHistory:
    """What a run returns: one record per epoch and the training time (this process's share)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class BiEncoderTrainer:
    """Trains a :class:`SuggestBiEncoder` in place.

    Args:
        config: hyper-parameters.
        checkpoint_dir: where ``checkpoint.pt`` goes each epoch; one found there is resumed.
        device: default CUDA when available.
        callbacks: ``cb(event, info)`` after each ``"step"`` and ``"epoch"``.
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        config: BiEncoderTrainConfig | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        callbacks: list[Callable[[str, dict], None]] | None = None,
        progress: bool = True,
    ):
        self.config = config or BiEncoderTrainConfig()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.callbacks = list(callbacks or [])
        self.progress = progress

    def prepare(self, model: SuggestBiEncoder, pairs: SuggestPairs) -> _Data:
        """Tokenise (and, with a frozen backbone, encode once) the pairs' texts."""
        cfg = model.config
        if cfg.caption and pairs.captions is None:
            raise ValueError(f"preset {cfg.preset} trains on documents' captions: none given")
        if cfg.image and pairs.image_vectors is None:
            raise ValueError(f"preset {cfg.preset} trains on documents' image vectors: none given")
        queries = model.tokens(pairs.queries)
        captions = model.tokens(pairs.captions) if cfg.caption else None
        if cfg.frozen:
            model.backbone.to(self.device)
            queries = token_states(model.backbone, queries)
            captions = token_states(model.backbone, captions) if captions is not None else None
        images = torch.as_tensor(np.asarray(pairs.image_vectors, dtype=np.float32)) if cfg.image else None
        return _Data(queries, captions, images)

    def _optimizer(self, model: SuggestBiEncoder) -> torch.optim.Optimizer:
        heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
        groups = [{"params": heads, "lr": self.config.lr}]
        if not model.config.frozen:
            groups.append({"params": list(model.backbone.parameters()), "lr": self.config.lr_backbone})
        return torch.optim.AdamW(groups, weight_decay=self.config.weight_decay)

    def loss(self, model: SuggestBiEncoder, data: _Data, rows: torch.Tensor, reg_factor: float) -> dict:
        """The step's loss and its parts on batch ``rows``."""
        cfg = self.config
        q = model.query_weights(data.queries.rows(rows))
        captions = data.captions.rows(rows) if data.captions is not None else None
        d = model.document_weights(captions, data.images[rows] if data.images is not None else None)
        norm = flops_norm if cfg.regulariser == "flops" else l1_norm
        ce = info_nce(q, d)
        reg = cfg.reg_query * norm(q) + cfg.reg_doc * norm(d)
        return {"total": ce + reg_factor * reg, "ce": ce, "reg": reg}

    def fit(self, model: SuggestBiEncoder, pairs: SuggestPairs) -> TrainHistory:
        """Train ``model`` on ``pairs`` (resuming a checkpoint in ``checkpoint_dir``); its history."""
        started = time.perf_counter()
        data = self.prepare(model, pairs)
        model.to(self.device).train()
        optimizer = self._optimizer(model)
        generator = torch.Generator().manual_seed(self.config.seed)
        steps_per_epoch = -(-len(data) // self.config.batch_size)
        warmup = int(steps_per_epoch * self.config.epochs * self.config.reg_warmup_ratio)
        done = self._resume(model, optimizer, generator)
        bar = tqdm(range(len(done.history), self.config.epochs), initial=len(done.history), total=self.config.epochs,
                   desc=f"{model.config.preset}", unit="epoch", disable=not self.progress)
        for epoch in bar:
            record = self._epoch(model, data, optimizer, generator, epoch * steps_per_epoch, warmup)
            record["epoch"] = epoch + 1
            done.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", q_nnz=f"{record['q_nnz']:.0f}", d_nnz=f"{record['d_nnz']:.0f}")
            save_checkpoint(self.checkpoint_dir, self._checkpoint(model, optimizer, generator, done.history))
            for cb in self.callbacks:
                cb("epoch", record)
        bar.close()
        model.eval()
        done.seconds = time.perf_counter() - started
        return done

    def _epoch(self, model, data: _Data, optimizer, generator, first_step: int, warmup: int) -> dict[str, float]:
        order = torch.randperm(len(data), generator=generator)
        total, nnz_q, nnz_d, steps = 0.0, 0.0, 0.0, 0
        bs = self.config.batch_size
        autocast = self.device.type == "cuda" and self.config.amp
        for start in range(0, len(data), bs):
            rows = order[start : start + bs]
            if len(rows) < 2:  # a lone last pair has no in-batch negative
                continue
            factor = l1_warmup_factor(first_step + steps, warmup)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                parts = self.loss(model, data, rows, factor)
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimizer.step()
            total += float(parts["total"].detach())
            steps += 1
            for cb in self.callbacks:
                cb("step", {k: float(v.detach()) for k, v in parts.items()})
        with torch.no_grad():
            sample = order[: min(len(data), 256)]
            q = model.query_weights(data.queries.rows(sample))
            caps = data.captions.rows(sample) if data.captions is not None else None
            d = model.document_weights(caps, data.images[sample] if data.images is not None else None)
            nnz_q, nnz_d = float((q > 0).sum(1).float().mean()), float((d > 0).sum(1).float().mean())
        return {"loss": total / max(1, steps), "q_nnz": nnz_q, "d_nnz": nnz_d}

    def _state(self, model: SuggestBiEncoder) -> dict[str, torch.Tensor]:
        state = model.state_dict() if not model.config.frozen else model.head_state()
        return {k: v.detach().cpu() for k, v in state.items()}

    def _checkpoint(self, model, optimizer, generator, history) -> dict[str, Any]:
        return {
            "epoch": len(history),
            "model": self._state(model),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "history": history,
            "config": asdict(self.config),
            "model_config": asdict(model.config),
        }

    def _resume(self, model, optimizer, generator) -> TrainHistory:
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME
        if path is None or not path.is_file():
            return TrainHistory()
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}); delete it") from e
        if ckpt.get("config") != asdict(self.config) or ckpt.get("model_config") != asdict(model.config):
            raise ValueError(f"{path} was written by a run with other settings; use another directory or delete it")
        model.load_state_dict(ckpt["model"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        logger.info("resuming %s after epoch %d", path, ckpt["epoch"])
        return TrainHistory(list(ckpt["history"]))
