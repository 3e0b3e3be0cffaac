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

Under ``torchrun`` the trainer is data-parallel on :mod:`pyterrier_d2s.training.distributed`, as the D2S
trainer is: ``batch_size`` stays the *global* batch, every rank draws the same seeded permutation and encodes
its contiguous slice of each global batch, and both towers' |V|-wide outputs are gathered with gradients, so
the InfoNCE negatives and the FLOPS / L1 regularisers span the global batch and every rank computes the
one-process loss; the mean all-reduce of the gradients then gives the one-process gradient (why:
:mod:`~pyterrier_d2s.training.distributed`). Rank 0 alone computes the epoch's record (broadcast to the
others) and writes the checkpoint; after a kill every rank resumes from it. ``negatives="local"`` keeps
negatives and regularisers per rank (no output gather; only the gradients travel).

Randomness: the batch order comes from the run's seeded generator (identical on every rank); a frozen
backbone's states are computed once in eval mode and the heads have no dropout, so a frozen run does not
depend on N. A fine-tuned backbone trains with its dropout on, drawn per rank from torch's global generator
over the rank's own rows, so its result depends on N (statistically, not in expectation); ``dropout=False``
keeps the backbone in eval mode while it trains, which makes a fine-tuned run independent of N too. The
model must be built identically on every rank (seed torch before building it, as
:func:`~pyterrier_d2s.suggest.experiment.train_preset` does).
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

from ..training.checkpoint import CHECKPOINT_NAME, comparable_settings, save_checkpoint
from ..training.config import NEGATIVES
from ..training.distributed import Distributed, init_from_env
from ..training.loss import REGULARISERS, flops_norm, l1_norm
from ..training.schedule import l1_warmup_factor
from .encoders import TokenStates, token_states
from .model import SuggestBiEncoder

__all__ = ["NEGATIVES", "BiEncoderTrainConfig", "BiEncoderTrainer", "SuggestPairs", "info_nce"]

# settings added after checkpoints were written: left out of the comparison at their default, so those resume
_LATER_DEFAULTS = {"negatives": "global", "dropout": True}

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
    # under torchrun: negatives (and regularisers) over the global batch, the one-process loss, or per rank
    negatives: str = "global"
    dropout: bool = True  # a fine-tuned backbone's dropout (False: eval mode, a result independent of N)

    def __post_init__(self) -> None:
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, not {self.regulariser!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, not {self.negatives!r}")
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
        callbacks: ``cb(event, info)`` after each ``"step"`` (the loss parts, ``epoch`` and ``step``, both
            0-based) and ``"epoch"`` (the epoch's record).
        progress: show a tqdm bar (rank 0 only).
        distributed: this process's place in a ``torchrun`` job (default: :func:`init_from_env`, which joins
            the job's process group, or is one process outside ``torchrun``).
    """

    def __init__(
        self,
        config: BiEncoderTrainConfig | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        callbacks: list[Callable[[str, dict], None]] | None = None,
        progress: bool = True,
        distributed: Distributed | None = None,
    ):
        self.dist = distributed if distributed is not None else init_from_env()
        self.config = config or BiEncoderTrainConfig()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.device = self.dist.device(device)
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
        return self.loss_of(*_encode(model, data, rows), reg_factor)

    def loss_of(self, q: torch.Tensor, d: torch.Tensor, reg_factor: float) -> dict:
        """InfoNCE of query rows ``q`` against document rows ``d`` plus the weighted regulariser of both."""
        cfg = self.config
        norm = flops_norm if cfg.regulariser == "flops" else l1_norm
        ce = info_nce(q, d)
        reg = cfg.reg_query * norm(q) + cfg.reg_doc * norm(d)
        return {"total": ce + reg_factor * reg, "ce": ce, "reg": reg}

    def distributed_loss(self, model: SuggestBiEncoder, data: _Data, rows: torch.Tensor, reg_factor: float) -> dict:
        """This rank's part of the loss on the global batch ``rows`` (under ``torchrun``).

        The rank encodes only its slice of ``rows``; with ``negatives="global"`` both towers' outputs are
        gathered with gradients and the loss is the one-process loss over the global batch, the same on every
        rank. With ``"local"`` the loss is over the rank's rows alone (zero, with zero gradients, on a rank
        holding fewer than 2 of the epoch's short last batch, which has no negative).
        """
        n, local = len(rows), rows[self.dist.local_slice(len(rows))]
        q, d = _encode(model, data, local)
        if self.config.negatives == "global":
            return self.loss_of(self.dist.gather(q, n), self.dist.gather(d, n), reg_factor)
        if len(local) < 2:
            # zero gradients for every trainable parameter, so the all-reduce gets the other ranks' layout
            zero = self.dist.zero_loss(p for p in model.parameters() if p.requires_grad)
            return {"total": zero, "ce": zero, "reg": zero}
        return self.loss_of(q, d, reg_factor)

    def fit(self, model: SuggestBiEncoder, pairs: SuggestPairs) -> TrainHistory:
        """Train ``model`` on ``pairs`` (resuming a checkpoint in ``checkpoint_dir``); its history.

        Under ``torchrun`` every rank calls this with the same model and pairs; rank 0 computes each epoch's
        record (the others receive it) and writes the checkpoint, and every rank waits for it at a barrier,
        so a killed job restarted on the same directory resumes on every rank from the same epoch.
        """
        started = time.perf_counter()
        data = self.prepare(model, pairs)
        model.to(self.device).train()
        if not self.config.dropout:
            model.backbone.eval()
        optimizer = self._optimizer(model)
        generator = torch.Generator().manual_seed(self.config.seed)
        steps_per_epoch = -(-len(data) // self.config.batch_size)
        warmup = int(steps_per_epoch * self.config.epochs * self.config.reg_warmup_ratio)
        done = self._resume(model, optimizer, generator)
        bar = tqdm(range(len(done.history), self.config.epochs), initial=len(done.history), total=self.config.epochs,
                   desc=f"{model.config.preset}", unit="epoch", disable=not (self.progress and self.dist.is_main))
        for epoch in bar:
            loss, sample = self._epoch(model, data, optimizer, generator, epoch, (steps_per_epoch, warmup))
            record = self.dist.broadcast_object(self._record(model, data, loss, sample) if self.dist.is_main else None)
            record["epoch"] = epoch + 1
            done.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", q_nnz=f"{record['q_nnz']:.0f}", d_nnz=f"{record['d_nnz']:.0f}")
            if self.dist.is_main:
                save_checkpoint(self.checkpoint_dir, self._checkpoint(model, optimizer, generator, done.history))
            self.dist.barrier()  # a rank killed after this resumes from this checkpoint with the others
            for cb in self.callbacks:
                cb("epoch", record)
        bar.close()
        model.eval()
        done.seconds = time.perf_counter() - started
        return done

    def _epoch(
        self, model, data: _Data, optimizer, generator, epoch: int, schedule: tuple[int, int]
    ) -> tuple[float, torch.Tensor]:
        """One pass in the generator's order (the same on every rank); (the mean step loss, up to 256 of the
        epoch's pairs for its record).

        ``schedule``: (steps per epoch, the regulariser's warm-up steps).
        """
        steps_per_epoch, warmup = schedule
        order = torch.randperm(len(data), generator=generator)
        total, steps = 0.0, 0
        bs = self.config.batch_size
        for start in range(0, len(data), bs):
            rows = order[start : start + bs]
            if len(rows) < 2:  # a lone last pair has no in-batch negative
                continue
            parts = self._step(model, data, optimizer, rows, l1_warmup_factor(epoch * steps_per_epoch + steps, warmup))
            total += float(parts["total"].detach())
            for cb in self.callbacks:
                cb("step", {**{k: float(v.detach()) for k, v in parts.items()}, "epoch": epoch, "step": steps})
            steps += 1
        return total / max(1, steps), order[: min(len(data), 256)]

    def _step(self, model, data: _Data, optimizer, rows: torch.Tensor, factor: float) -> dict:
        """Forward, backward (and, under ``torchrun``, the gradient all-reduce) and optimiser step on the
        global batch ``rows``; the loss parts (the global batch's; with ``negatives="local"`` the ranks' mean
        total)."""
        autocast = self.device.type == "cuda" and self.config.amp
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            if self.dist.active:
                parts = self.distributed_loss(model, data, rows, factor)
            else:
                parts = self.loss(model, data, rows, factor)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        self.dist.average_gradients(p for p in model.parameters() if p.requires_grad)
        optimizer.step()
        if self.dist.active and self.config.negatives == "local":
            parts = {"total": self.dist.sum(parts["total"]) / self.dist.world}
        return parts

    @torch.no_grad()
    def _record(self, model, data: _Data, loss: float, sample: torch.Tensor) -> dict[str, float]:
        """The epoch's record: its mean loss and the mean non-zeros of the ``sample`` pairs' vectors."""
        q, d = _encode(model, data, sample)
        return {"loss": loss, "q_nnz": float((q > 0).sum(1).float().mean()), "d_nnz": float((d > 0).sum(1).float().mean())}

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
        if _settings(ckpt.get("config")) != _settings(asdict(self.config)) or ckpt.get("model_config") != asdict(
            model.config
        ):
            raise ValueError(f"{path} was written by a run with other settings; use another directory or delete it")
        model.load_state_dict(ckpt["model"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        logger.info("resuming %s after epoch %d", path, ckpt["epoch"])
        return TrainHistory(list(ckpt["history"]))


def _encode(model: SuggestBiEncoder, data: _Data, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(query vectors, document vectors) of the pairs ``rows``."""
    q = model.query_weights(data.queries.rows(rows))
    captions = data.captions.rows(rows) if data.captions is not None else None
    d = model.document_weights(captions, data.images[rows] if data.images is not None else None)
    return q, d


def _settings(config: dict | None) -> dict | None:
    """A training config as checkpoints compare it (the :data:`_LATER_DEFAULTS` at their default left out)."""
    return comparable_settings(config, later_defaults=_LATER_DEFAULTS)
