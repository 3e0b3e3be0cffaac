"""D2STrainer: trains a D2SHead on frozen dense vectors (paper Section 4, Algorithm 1, Eq. 7).

Batches are caption–image pairs (an image appears once per caption of it). Each step draws the expansion
masks (:class:`ExpansionControl`), masks the caption vectors, and minimises Eq. 7. After every epoch the
head is validated (caption→image R@1 with exact sparse scoring), the best head is kept, and a checkpoint is
written atomically, so a killed run resumes from the last finished epoch with the same result as an
uninterrupted one (same seed, CPU).

The parts live beside this module: the configuration (:mod:`.config`), the step schedules
(:mod:`.schedule`), the training state and its checkpoint (:mod:`.checkpoint`), the column-restricted head
(:mod:`.compact_head`) and the validation (:mod:`.validation`). Here: setting a run up (:class:`_Run`), its
training step and epoch, and :meth:`D2STrainer.fit`, which strings them together.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..data.pairs import PairedVectors
from ..head import D2SHead, D2SHeadConfig, load_word_embeddings
from ..vocab import Vocabulary, ids_to_csr
from .checkpoint import CHECKPOINT_NAME, TrainingState, data_fingerprint, load_checkpoint, save_checkpoint
from .compact_head import TokenRows, TrainingHead, pca_init_
from .config import GAP_OPTIONS, TrainConfig
from .cuda_graph import GraphedStep
from .distributed import Distributed, init_from_env
from .expansion import ExpansionControl
from .loss import D2SLoss
from .recipe import TrainingSetShape
from .regularisers import WeightAverage, l2sp_penalty
from .schedule import StepSchedule, first_eligible_epoch
from .text_space import fit_own_tokens_, sentence_encoder, text_space_init_
from .validation import validation_metrics

__all__ = ["CHECKPOINT_NAME", "D2STrainer", "TrainConfig", "TrainResult", "pca_init_"]

logger = logging.getLogger(__name__)

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    """What :meth:`D2STrainer.fit` returns: the best head, which epoch it is from, and the run's history."""

    head: D2SHead
    best_epoch: int
    best_r1: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    config: TrainConfig | None = None  # the resolved configuration the run used


def _to_device(data: PairedVectors, device: torch.device) -> Tensors:
    """Caption vectors, image vectors and each caption's image row of ``data``, on ``device``."""
    return (
        torch.from_numpy(data.caption_vectors).to(device),
        torch.from_numpy(data.image_vectors).to(device),
        torch.from_numpy(data.caption_image).to(device),
    )


@dataclass
class _Run:
    """Everything one :meth:`D2STrainer.fit` builds before its first epoch, and its training step and epoch.

    ``p_c``, ``p_k`` and ``l1_factor`` are the schedule values the step reads from the device; they are
    updated in place, so a captured CUDA graph sees the updates.
    """

    cfg: TrainConfig
    device: torch.device
    columns: np.ndarray
    control: ExpansionControl
    token_rows: TokenRows
    val_own: TokenRows | None
    full_head: D2SHead
    head: TrainingHead
    loss_fn: D2SLoss
    graphed: bool
    base_lrs: list[float]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # batch order (host)
    mask_generator: torch.Generator  # expansion draws (device)
    schedule: StepSchedule
    train_tensors: Tensors
    val_tensors: Tensors
    dist: Distributed = field(
        default_factory=Distributed
    )  # this process's rank in a torchrun job (see .distributed)
    # TrainConfig.ema_decay: the weight average that is validated and returned (None: the weights themselves)
    ema: WeightAverage | None = None
    # TrainConfig.l2sp_*: W1's and W2's (output rows) start values
    starts: list[torch.Tensor] | None = None
    # TrainConfig.hidden_dropout / input_*: the head's noise draws (device)
    noise_generator: torch.Generator | None = None
    p_c: torch.Tensor = field(init=False)
    p_k: torch.Tensor = field(init=False)
    l1_factor: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.p_c = torch.zeros((), device=self.device)
        self.p_k = torch.ones(len(self.columns), device=self.device)
        self.l1_factor = torch.ones((), device=self.device)
        if self.cfg.l2sp_proj or self.cfg.l2sp_vocab:
            self.starts = [p.detach().clone() for p in self._l2sp_params()]
        if self.cfg.ema_decay:
            self.ema = WeightAverage(self.head, self.cfg.ema_decay)
        if self.cfg.stochastic_step:
            self.noise_generator = torch.Generator(device=self.device).manual_seed(
                self.cfg.seed + 2 + self.dist.rank
            )
            self.head.hidden_dropout = self.cfg.hidden_dropout
            self.head.input_noise = self.cfg.input_noise
            self.head.input_dropout = self.cfg.input_dropout
            self.head.generator = self.noise_generator

    @property
    def eval_head(self) -> torch.nn.Module:
        """The weights that are validated and kept: the weight average with ``ema_decay``, else the head."""
        return self.head if self.ema is None else self.ema.module

    def _l2sp_params(self) -> list[torch.Tensor]:
        return [self.head.proj.weight, self.head.vocab_proj.weight]

    def _regularised(self, total: torch.Tensor) -> torch.Tensor:
        """``total`` plus the L2-SP pull toward the start (``l2sp_proj`` / ``l2sp_vocab``), if any."""
        if self.starts is None:
            return total
        penalty = l2sp_penalty(self._l2sp_params(), self.starts, [self.cfg.l2sp_proj, self.cfg.l2sp_vocab])
        return total if penalty is None else total + penalty

    def _after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.head)

    @property
    def pairs(self) -> int:
        return len(self.train_tensors[0])

    def reset_learning_rates(self) -> None:
        """Set the base learning rates: as device tensors for a captured step, which reads them from there.

        Called after a resume too, since a checkpoint written by a GPU run may be resumed on the CPU and
        vice versa.
        """
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = torch.tensor(lr, device=self.device) if self.graphed else lr
            group["capturable"] = self.graphed

    def set_step(self, step: int) -> None:
        """The learning rates and the L1 factor of ``step`` (0-based, over the whole run)."""
        factor = self.schedule.lr_factor(step)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            if self.graphed:
                group["lr"].fill_(lr * factor)
            else:
                group["lr"] = lr * factor
        self.l1_factor.fill_(self.schedule.l1_factor(step))

    def train_step(self, rows: torch.Tensor) -> torch.Tensor:
        """Forward, backward and optimiser step on the training pairs ``rows``; the loss (0-d, on the device).

        The gradients must be ``None`` on entry (see :meth:`step_runner`). ``rows`` is the global batch;
        under ``torchrun`` :meth:`_distributed_step` computes this rank's share of it.
        """
        if self.dist.active:
            return self._distributed_step(rows)
        z_cap, z_img, cap_img = self.train_tensors
        # candidates="all-images": every training image against the batch's captions, both directions
        zc, zi = z_cap[rows], (z_img if self.cfg.candidates == "all-images" else z_img[cap_img[rows]])
        expansion = self.control.draw(self.token_rows.mask(rows), self.p_c, self.p_k, self.mask_generator)
        use_amp = self.cfg.amp and self.device.type == "cuda"
        # no autocast weight cache: a graph replay must recast the weights the optimiser changed
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp, cache_enabled=False):
            s_cap = self.head(zc, mask=expansion)
            s_img = self.head(zi)
            parts = self.loss_fn(s_img, s_cap, zi, zc, l1_factor=self.l1_factor)
            total = self._regularised(parts.total)
        total.backward()
        self.optimizer.step()
        self._after_step()
        return total.detach()

    def _distributed_step(self, rows: torch.Tensor) -> torch.Tensor:
        """One data-parallel step: this rank's slice of the global batch ``rows`` through the head.

        The expansion masks are drawn for the whole global batch from the run's mask generator (seeded alike
        on every rank, so all ranks draw the same masks, the ones a one-process run draws) and sliced, so
        they do not depend on N. With ``negatives="global"`` the sparse outputs are gathered with gradients
        and every rank computes the one-process loss over the global batch (the dense vectors need not
        travel: every rank holds them); with ``"local"`` each rank's loss uses its own rows only. The
        gradient is then averaged over the ranks (see :mod:`.distributed` for why that is exact).
        """
        z_cap, z_img, cap_img = self.train_tensors
        n, mine = len(rows), self.dist.local_slice(len(rows))
        expansion = self.control.draw(self.token_rows.mask(rows), self.p_c, self.p_k, self.mask_generator)
        local = rows[mine]
        # candidates="all-images": every rank scores all training images itself (nothing gathered for them);
        # their gradient path is then the same on every rank, so the mean all-reduce keeps it exact
        all_images = self.cfg.candidates == "all-images"
        use_amp = self.cfg.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            s_cap = self.head(z_cap[local], mask=expansion[mine])
            s_img = self.head(z_img if all_images else z_img[cap_img[local]])
            if self.cfg.negatives == "global":
                s_cap = self.dist.gather(s_cap, n)
                s_img = s_img if all_images else self.dist.gather(s_img, n)
            else:
                rows = local
            zi = z_img if all_images else z_img[cap_img[rows]]
            parts = self.loss_fn(s_img, s_cap, zi, z_cap[rows], l1_factor=self.l1_factor)
        if len(rows) < 2:  # "local" with fewer than 2 rows here (an epoch's short last batch): no signal
            parts.total = self.dist.zero_loss(self.head.parameters())
        # every rank adds the same L2-SP term: its averaged gradient is the one-process gradient
        total = self._regularised(parts.total)
        total.backward()
        self.dist.average_gradients(self.head.parameters())
        self.optimizer.step()
        self._after_step()
        loss = total.detach()
        return loss if self.cfg.negatives == "global" else self.dist.sum(loss) / self.dist.world

    def _eager_step(self, rows: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self.train_step(rows)

    def step_runner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """What runs one step: the step replayed as a CUDA graph where supported, else eagerly."""
        if self.graphed:
            return GraphedStep(
                self.train_step,
                self.optimizer,
                self.cfg.batch_size,
                self.device,
                generators=[self.mask_generator],
            )
        return self._eager_step

    def train_epoch(
        self,
        epoch: int,
        run_step: Callable[[torch.Tensor], torch.Tensor],
        callbacks: list[Callable[[str, dict], None]],
    ) -> torch.Tensor:
        """One pass over the training pairs in a seeded order; the summed loss, on the device (no host sync
        per step)."""
        self.head.train()
        perm = torch.randperm(self.pairs, generator=self.generator).to(self.device)
        self.p_c.fill_(self.control.caption_prob(epoch))
        self.p_k.copy_(self.control.word_probs(epoch))
        epoch_loss = torch.zeros((), device=self.device)
        steps, batch = self.schedule.steps_per_epoch, self.cfg.batch_size
        for b in range(steps):
            self.set_step(epoch * steps + b)
            rows = perm[b * batch : (b + 1) * batch]
            if len(rows) < 2:
                continue  # a softmax over one candidate carries no signal
            loss = run_step(rows)
            epoch_loss += loss
            for cb in callbacks:
                cb("step", {"epoch": epoch, "step": b, "loss": loss})
        return epoch_loss

    def epoch_record(self, epoch: int, epoch_loss: torch.Tensor) -> dict[str, Any]:
        """Validate the head after ``epoch`` (0-based); its history record (``epoch`` 1-based).

        Raises:
            FloatingPointError: the epoch's mean loss is not finite.
        """
        metrics = validation_metrics(self.eval_head, self.val_tensors, self.val_own, self.cfg.eval_batch_size)
        loss_value = float(epoch_loss) / self.schedule.steps_per_epoch
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"training diverged in epoch {epoch + 1} (loss {loss_value}); lower the learning rates"
            )
        return {"epoch": epoch + 1, "loss": loss_value, "p_c": self.control.caption_prob(epoch), **metrics}

    def checkpoint(self, state: TrainingState, fingerprint: dict) -> dict[str, Any]:
        """The checkpoint of ``state`` with this run's weights, optimiser, generators and configuration (and the
        weight average and noise generator, where the run has them)."""
        ckpt = state.checkpoint(
            self.head, self.optimizer, self.generator, self.mask_generator, asdict(self.cfg), fingerprint
        )
        if self.ema is not None:
            ckpt["ema"] = self.ema.state_dict()
        if self.noise_generator is not None:
            ckpt["noise_generator"] = self.noise_generator.get_state()
        return ckpt

    def restore_extras(self, ckpt: dict[str, Any]) -> None:
        """Load the weight average and noise generator of ``ckpt`` (see :meth:`checkpoint`)."""
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if self.noise_generator is not None:
            self.noise_generator.set_state(ckpt["noise_generator"])


class D2STrainer:
    """Trains a :class:`D2SHead` on :class:`PairedVectors`.

    Args:
        config: hyper-parameters (``None`` fields come from the recipe, computed from the training data).
        vocab: the output vocabulary (default: offline bert-base-uncased).
        embeddings: |V| x ω matrix to initialise W2 (default: the vocabulary's shipped word embeddings).
        checkpoint_dir: where the per-epoch checkpoint goes; a checkpoint found there is resumed.
        device: ``"cuda"``, ``"cpu"``... (default: CUDA when available).
        callbacks: called as ``cb(event, info)`` after every step (``"step"``; ``info["loss"]`` is a 0-d tensor
            on the device, so a callback that does not read it costs no GPU synchronisation) and after every
            epoch (``"epoch"``; the history record: loss, p_c, r1, mrr, flops, q_nnz, d_nnz).
        progress: show a tqdm bar (rank 0 only).
        distributed: this process's place in a ``torchrun`` job (default: :func:`init_from_env`, which
            joins the job's process group, or is one process outside ``torchrun``). Each rank trains on its
            slice of every global batch of ``config.batch_size`` rows; rank 0 validates and checkpoints.
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        vocab: Vocabulary | None = None,
        embeddings: torch.Tensor | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        callbacks: list[Callable[[str, dict], None]] | None = None,
        progress: bool = True,
        distributed: Distributed | None = None,
    ):
        self.dist = distributed if distributed is not None else init_from_env()
        self.config = config or TrainConfig()
        self.vocab = vocab or Vocabulary()
        self.embeddings = embeddings
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.device = self.dist.device(device)
        self.callbacks = list(callbacks or [])
        self.progress = progress

    # -- set-up ---------------------------------------------------------------------------------------
    def new_head(
        self, input_dim: int, dense_encoder: str | None = None, config: TrainConfig | None = None
    ) -> D2SHead:
        """A newly initialised full head for ``input_dim``-d vectors (W2 from the vocabulary's word embeddings
        with ``init="embeddings"``), seeded with the config's ``seed``."""
        cfg = config or self.config
        embeddings, embeddings_from = self.embeddings, None
        init = {"text-space": "random", None: "embeddings"}.get(cfg.init, cfg.init)  # text-space: in _prepare
        if init == "embeddings" and embeddings is None:
            embeddings_from = self.vocab.name_or_dir
            embeddings = load_word_embeddings(embeddings_from)
        hidden = cfg.hidden_dim or (int(embeddings.shape[1]) if embeddings is not None else 384)
        head_cfg = D2SHeadConfig(
            input_dim=input_dim,
            hidden_dim=hidden,
            vocab_size=len(self.vocab),
            init=init,
            embeddings_from=embeddings_from,
            dense_encoder=dense_encoder,
            exp=cfg.exp,
        )
        torch.manual_seed(cfg.seed)
        return D2SHead(head_cfg, vocab=self.vocab, embeddings=embeddings)

    def resolve(self, data: PairedVectors) -> TrainConfig:
        """The configuration a :meth:`fit` on ``data`` uses: the recipe's values for its training split."""
        train, _ = data.train_and_validation()
        return self.config.resolved(TrainingSetShape(len(train.image_ids), len(train), train.dim))

    def output_columns(self, cfg: TrainConfig, own_train: sp.csr_matrix) -> np.ndarray:
        """Vocabulary ids the head may output: non-special tokens; only those of the training captions with
        ``output_vocab="captions"``, and of those only whole words (no ``##`` pieces) with ``"caption-words"``."""
        allowed = ~self.vocab.special_mask
        if cfg.output_vocab in ("captions", "caption-words"):
            allowed &= np.asarray((own_train > 0).sum(axis=0)).ravel() > 0
        if cfg.output_vocab == "caption-words":
            allowed &= ~np.char.startswith(np.asarray(self.vocab.tokens), "##")
        return np.flatnonzero(allowed).astype(np.int64)

    # -- training -------------------------------------------------------------------------------------
    def fit(self, data: PairedVectors, dense_encoder: str | None = None) -> TrainResult:
        """Train on ``data``'s training pairs, validate on its validation pairs, return the best head."""
        train, val = _training_and_validation(data)
        cfg = self.resolve(data)
        logger.info("training recipe: %s", cfg.recipe_values())
        started = time.perf_counter()
        run = self._prepare(cfg, train, val, dense_encoder)
        fingerprint = data_fingerprint(train, run.columns)
        state = self._resume(run, fingerprint)
        run.reset_learning_rates()
        run_step = run.step_runner()
        eligible_from = first_eligible_epoch(cfg.epochs, cfg.select_from, cfg.warmup_ratio, cfg.l1_warmup)
        bar = tqdm(
            range(state.epoch, cfg.epochs),
            initial=state.epoch,
            total=cfg.epochs,
            desc=f"D2S exp={cfg.exp} η={cfg.eta:g}",
            disable=not (self.progress and self.dist.is_main),
            unit="epoch",
        )
        for epoch in bar:
            epoch_loss = run.train_epoch(epoch, run_step, self.callbacks)
            # rank 0 alone validates; the others take its record, so every rank keeps the same best head
            record = self.dist.broadcast_object(
                run.epoch_record(epoch, epoch_loss) if self.dist.is_main else None
            )
            state.finish_epoch(record, eligible=epoch + 1 >= eligible_from, head=run.eval_head)
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                r1=f"{record['r1']:.3f}",
                flops=f"{record['flops']:.1f}",
                q_nnz=f"{record['q_nnz']:.0f}",
                d_nnz=f"{record['d_nnz']:.0f}",
            )
            if self.dist.is_main:
                save_checkpoint(self.checkpoint_dir, run.checkpoint(state, fingerprint))
            self.dist.barrier()  # a rank killed now resumes from this checkpoint with the others
            for cb in self.callbacks:
                cb("epoch", record)
        bar.close()
        return _result(run, state, data.name, started)

    def _prepare(
        self, cfg: TrainConfig, train: PairedVectors, val: PairedVectors, dense_encoder: str | None
    ) -> _Run:
        """The run's output columns, expansion control, heads, loss, optimiser, generators and tensors.

        The order is the seeded order: the head is initialised from ``cfg.seed`` before anything else draws.
        """
        dev = self.device
        own_full = ids_to_csr(self.vocab.token_ids(train.caption_texts), len(self.vocab))
        columns = self.output_columns(cfg, own_full)
        own_train = own_full[:, columns]
        df = self.vocab.document_frequency(own_train)
        val_own = None
        if cfg.exp == "0":  # a model trained without expansion is validated without it
            val_ids = ids_to_csr(self.vocab.token_ids(val.caption_texts), len(self.vocab))[:, columns]
            val_own = TokenRows(val_ids.tocsr(), dev)
        full_head = self._started_head(cfg, train, columns, own_train, dense_encoder)
        head = TrainingHead(full_head, columns).to(dev)
        # a captured step cannot hold collectives: the CUDA-graph fast path is one-process only
        # the gap regularisers (dropout, noise, EMA, L2-SP, all-image candidates) run eagerly
        graphed = cfg.cuda_graph and GraphedStep.supported(dev) and not self.dist.active and _plain_step(cfg)
        base_lrs = [
            cfg.lr_proj,
            cfg.lr_vocab,
            cfg.lr_vocab if cfg.lr_vocab_bias is None else cfg.lr_vocab_bias,
        ]
        return _Run(
            cfg=cfg,
            device=dev,
            columns=columns,
            control=ExpansionControl(cfg.exp, cfg.epochs, df, cfg.caption_draw, cfg.own_terms),
            token_rows=TokenRows(own_train, dev),
            val_own=val_own,
            full_head=full_head,
            head=head,
            loss_fn=D2SLoss(tau=cfg.tau, lam=cfg.lam, eta=cfg.eta, regulariser=cfg.regulariser),
            graphed=graphed,
            base_lrs=base_lrs,
            optimizer=_optimizer(head, base_lrs, graphed),
            generator=torch.Generator().manual_seed(cfg.seed),
            mask_generator=torch.Generator(device=dev).manual_seed(cfg.seed + 1),
            schedule=StepSchedule.for_run(
                len(train), cfg.batch_size, cfg.epochs, cfg.warmup_ratio, cfg.l1_warmup
            ),
            train_tensors=_to_device(train, dev),
            val_tensors=_to_device(val, dev),
            dist=self.dist,
        )

    def _started_head(
        self,
        cfg: TrainConfig,
        train: PairedVectors,
        columns: np.ndarray,
        own_train,
        dense_encoder: str | None,
    ) -> D2SHead:
        """The full head with its start: the paper's, PCA's W1, or the text-space ridge map (+ own-token fit)."""
        full_head = self.new_head(train.dim, dense_encoder, cfg)
        if cfg.proj_init == "pca":
            pca_init_(full_head.proj, np.concatenate([train.image_vectors, train.caption_vectors]))
        if cfg.init == "text-space":
            image_captions = train.meta.get("image_captions") if cfg.ridge_all_captions else None
            text_space_init_(
                full_head,
                train,
                columns,
                self.vocab,
                encoder=sentence_encoder(),
                seed=cfg.seed,
                image_captions=image_captions,
            )
            if cfg.own_token_fit:
                fit_own_tokens_(full_head, train, columns, own_train, cfg.own_token_fit, seed=cfg.seed)
        return full_head

    def _resume(self, run: _Run, fingerprint: dict) -> TrainingState:
        """The state of the checkpoint in :attr:`checkpoint_dir`, loaded into ``run``; a fresh one without."""
        ckpt = load_checkpoint(self.checkpoint_dir, fingerprint, asdict(run.cfg))
        if ckpt is None:
            return TrainingState()
        state = TrainingState.restore(ckpt, run.head, run.optimizer, run.generator, run.mask_generator)
        run.restore_extras(ckpt)
        logger.info("resuming from %s at epoch %d", self.checkpoint_dir, state.epoch)
        return state


def _plain_step(cfg: TrainConfig) -> bool:
    """Whether the step is the paper's: no dropout, input noise, weight average, L2-SP or extra candidates."""
    return not (
        cfg.stochastic_step or cfg.ema_decay or cfg.l2sp_proj or cfg.l2sp_vocab or cfg.candidates != "batch"
    )


def _gap_options(cfg: TrainConfig) -> dict[str, Any]:
    """The generalisation-gap options the run set away from their (off) defaults, for the head's record."""
    defaults = TrainConfig()
    return {k: getattr(cfg, k) for k in GAP_OPTIONS if getattr(cfg, k) != getattr(defaults, k)}


def _training_and_validation(data: PairedVectors) -> tuple[PairedVectors, PairedVectors]:
    """``data``'s training and validation pairs, checked for training."""
    data.validate()
    train, val = data.train_and_validation()
    if len(train) < 2:
        raise ValueError(f"{data.name}: need at least 2 training captions, got {len(train)}")
    if train.dim < 1:
        raise ValueError(f"{data.name}: the vectors have dimension 0")
    return train, val


def _optimizer(head: TrainingHead, base_lrs: list[float], graphed: bool) -> torch.optim.Optimizer:
    """AdamW over W1, LayerNorm + W2 and W2's bias, each group at its base learning rate."""
    return torch.optim.AdamW(
        [
            {"params": list(head.proj.parameters()), "lr": base_lrs[0]},
            {"params": [*head.norm.parameters(), head.vocab_proj.weight], "lr": base_lrs[1]},
            {"params": [head.vocab_proj.bias], "lr": base_lrs[2]},
        ],
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        fused=True,  # one kernel for W2: ~8x faster than the per-tensor loop on CPU
        capturable=graphed,
    )


def _result(run: _Run, state: TrainingState, data_name: str, started: float) -> TrainResult:
    """The full head with the best epoch's weights and the run's provenance in its config."""
    cfg = run.cfg
    run.head.cpu().write_into(run.full_head, state.best_state)
    if cfg.output_vocab != "all":
        run.full_head.set_output_tokens(run.columns)
    best_r1 = next(r["r1"] for r in state.history if r["epoch"] == state.best_epoch)
    run.full_head.config.extra = {
        "eta": cfg.eta,
        "lam": cfg.lam,
        "tau": cfg.tau,
        **cfg.recipe_values(),
        "caption_draw": cfg.caption_draw,
        "own_terms": cfg.own_terms,
        "init": cfg.init,
        "proj_init": cfg.proj_init,
        "regulariser": cfg.regulariser,
        "seed": cfg.seed,
        "best_epoch": state.best_epoch,
        "val_r1": best_r1,
        "val_mrr": state.best_score,
        "output_tokens": len(run.columns),
        "trained_on": data_name,
        **_gap_options(cfg),
    }
    return TrainResult(
        run.full_head, state.best_epoch, best_r1, state.history, time.perf_counter() - started, cfg
    )
