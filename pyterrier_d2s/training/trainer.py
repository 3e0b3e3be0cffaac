"""D2STrainer: trains a D2SHead on frozen dense vectors (paper Section 4, Algorithm 1, Eq. 7).

Batches are caption–image pairs (an image appears once per caption of it). Each step draws the expansion
masks (:class:`ExpansionControl`), masks the caption vectors, and minimises Eq. 7. After every epoch the
head is validated (caption→image R@1 with exact sparse scoring), the best head is kept, and a checkpoint is
written atomically, so a killed run resumes from the last finished epoch with the same result as an
uninterrupted one (same seed, CPU).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.pairs import PairedVectors
from ..head import D2SHead, D2SHeadConfig, load_word_embeddings, sparse_projection
from ..measures import flops_from_counts
from ..vocab import Vocabulary, ids_to_csr
from .cuda_graph import GraphedStep
from .expansion import EXPANSION_MODES, ExpansionControl
from .loss import D2SLoss, l1_warmup_factor, sparse_scores
from .recipe import RECIPES, TrainingSetShape, recipe_for

__all__ = ["D2STrainer", "TrainConfig", "TrainResult"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


# options a recipe sets when the config leaves them at None
RECIPE_KEYS = ("epochs", "batch_size", "lr_proj", "lr_vocab", "warmup_ratio", "output_vocab", "select_from")
OUTPUT_VOCABS = ("all", "captions", "caption-words")
PROJ_INITS = ("default", "pca")


@dataclass
class TrainConfig:
    """Hyper-parameters. ``None`` fields are set by the recipe from the training data (see
    :mod:`pyterrier_d2s.training.recipe`); an explicit value overrides the recipe.

    ``lam`` is λ and ``eta`` is η of Eq. 7; λ = 0.5 makes Eq. 7 the published script's
    ``(ℓ(I→C) + ℓ(C→I))/2 + η·(L1(s_I) + L1(s_C))/2``.

    ``output_vocab``: ``"all"`` (the paper: every non-special WordPiece token), ``"captions"`` (only tokens
    of the training captions: the head cannot drift onto words no caption uses, and a step projects onto a
    few thousand rows instead of 30,522) or ``"caption-words"`` (those without ``##`` word pieces). ``select_from``: the best epoch (by validation MRR) is chosen among
    the epochs from this share of the run on, so that an early, not yet sparse head is never picked.
    ``caption_draw`` / ``own_terms``: see :class:`ExpansionControl`.
    """

    exp: str = "c+w"
    eta: float = 1e-3
    lam: float = 0.5
    tau: float = 1e-3
    recipe: str = "auto"
    epochs: int | None = None
    batch_size: int | None = None
    lr_proj: float | None = None  # W1
    lr_vocab: float | None = None  # LayerNorm + W2 (initialised from vocabulary embeddings)
    lr_vocab_bias: float | None = None  # W2's bias (starts at zero, not pre-trained); None: lr_vocab
    warmup_ratio: float | None = None  # linear LR warm-up over this share of the steps, then linear decay
    l1_warmup: bool = True  # quadratic warm-up of the L1 weight over the same steps
    output_vocab: str | None = None
    select_from: float | None = None
    caption_draw: str = "batch"
    own_terms: str = "keep"
    hidden_dim: int | None = None  # ω; default: the width of the initial vocabulary embeddings
    init: str = "embeddings"
    proj_init: str = "default"  # W1: torch's default, or "pca" (the training vectors' principal directions)
    regulariser: str = "l1"  # Eq. 7's L1, or "flops" (SPLADE's FLOPS regulariser; not the paper's)
    seed: int = 42
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    cuda_graph: bool = True  # replay the training step as a CUDA graph (CUDA only; same maths, ~3x faster)
    eval_batch_size: int = 1024

    def __post_init__(self):
        if self.exp not in EXPANSION_MODES:
            raise ValueError(f"exp must be one of {EXPANSION_MODES}, not {self.exp!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, not {self.recipe!r}")
        for name in (
            "eta",
            "lam",
            "tau",
            "lr_proj",
            "lr_vocab",
            "lr_vocab_bias",
            "warmup_ratio",
            "select_from",
        ):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        D2SLoss(self.tau, self.lam, self.eta, self.regulariser)  # validates tau, lam, eta, regulariser
        for name in ("lr_proj", "lr_vocab", "lr_vocab_bias"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1], not {self.warmup_ratio}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, not {self.epochs}")
        if self.batch_size is not None and self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, not {self.batch_size}")
        if self.output_vocab is not None and self.output_vocab not in OUTPUT_VOCABS:
            raise ValueError(f"output_vocab must be one of {OUTPUT_VOCABS}, not {self.output_vocab!r}")
        if self.select_from is not None and not 0.0 <= self.select_from < 1.0:
            raise ValueError(f"select_from must be in [0, 1), not {self.select_from}")
        ExpansionControl(self.exp, 1, np.zeros(1), self.caption_draw, self.own_terms)  # validates both
        if self.proj_init not in PROJ_INITS:
            raise ValueError(f"proj_init must be one of {PROJ_INITS}, not {self.proj_init!r}")

    def resolved(self, shape: TrainingSetShape) -> TrainConfig:
        """A copy with every ``None`` recipe field set from ``recipe`` for a training set of ``shape``."""
        chosen = recipe_for(self.recipe, shape)
        return replace(self, **{k: chosen[k] for k in RECIPE_KEYS if getattr(self, k) is None})

    def recipe_values(self) -> dict[str, Any]:
        """The values of the recipe fields (after :meth:`resolved`), as recorded in reports and configs."""
        return {"recipe": self.recipe, **{k: getattr(self, k) for k in RECIPE_KEYS}}


@dataclass
class TrainResult:
    head: D2SHead
    best_epoch: int
    best_r1: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    config: TrainConfig | None = None  # the resolved configuration the run used


# settings that change how fast a run goes, not what it computes: a run may resume with other values
_RUNTIME_SETTINGS = ("amp", "cuda_graph", "eval_batch_size")


def _training_settings(config: dict | None) -> dict | None:
    if config is None:
        return None
    return {k: v for k, v in config.items() if k not in _RUNTIME_SETTINGS}


class _TokenRows:
    """Captions' own token ids, padded to one row per caption on the device, to build B x |V| masks.

    A batch's mask is one scatter with no host synchronisation (a CSR gather needs the batch's total
    length on the host). Padding points at an extra column that is cut off afterwards.
    """

    def __init__(self, own: sp.csr_matrix, device: torch.device):
        lengths = np.diff(own.indptr)
        self.vocab_size = own.shape[1]
        width = max(1, int(lengths.max(initial=0)))
        padded = np.full((own.shape[0], width), self.vocab_size, dtype=np.int32)
        padded[np.arange(width) < lengths[:, None]] = own.indices  # row-major order = CSR order
        self.padded = torch.from_numpy(padded).to(device)

    def mask(self, rows: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        out = torch.zeros(len(rows), self.vocab_size + 1, dtype=dtype, device=rows.device)
        out.scatter_(1, self.padded[rows].long(), 1)
        return out[:, : self.vocab_size]


class _TrainingHead(nn.Module):
    """The head restricted to its allowed output columns, for training.

    Same maths as :class:`D2SHead` on those columns (every other column is zero anyway), with W2 and b2
    holding only their rows, so a step's projection, its backward pass and AdamW touch ``len(columns)`` rows
    instead of |V|. :meth:`write_into` copies the trained weights back into the full head.
    """

    def __init__(self, head: D2SHead, columns: np.ndarray):
        super().__init__()
        self.proj = copy.deepcopy(head.proj)
        self.norm = copy.deepcopy(head.norm)
        idx = torch.from_numpy(columns)
        self.vocab_proj = nn.Linear(head.config.hidden_dim, len(columns))
        with torch.no_grad():
            self.vocab_proj.weight.copy_(head.vocab_proj.weight[idx])
            self.vocab_proj.bias.copy_(head.vocab_proj.bias[idx])
        self.register_buffer("keep_mask", torch.ones(len(columns)), persistent=False)
        self.columns = columns

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = self.keep_mask if mask is None else mask * self.keep_mask
        return sparse_projection(self.norm(self.proj(z)), self.vocab_proj.weight, self.vocab_proj.bias, keep)

    @torch.no_grad()
    def write_into(self, head: D2SHead, state: dict[str, torch.Tensor]) -> None:
        """Load ``state`` (a state dict of this module) into the full ``head``'s columns."""
        idx = torch.from_numpy(self.columns)
        for name in ("proj.weight", "proj.bias", "norm.weight", "norm.bias"):
            head.state_dict()[name].copy_(state[name])
        head.vocab_proj.weight[idx] = state["vocab_proj.weight"].to(head.vocab_proj.weight.dtype)
        head.vocab_proj.bias[idx] = state["vocab_proj.bias"].to(head.vocab_proj.bias.dtype)


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
        progress: show a tqdm bar.
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
    ):
        self.config = config or TrainConfig()
        self.vocab = vocab or Vocabulary()
        self.embeddings = embeddings
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but this torch has no CUDA device")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.callbacks = list(callbacks or [])
        self.progress = progress

    # -- set-up ---------------------------------------------------------------------------------------
    def new_head(
        self, input_dim: int, dense_encoder: str | None = None, config: TrainConfig | None = None
    ) -> D2SHead:
        cfg = config or self.config
        embeddings, embeddings_from = self.embeddings, None
        if cfg.init == "embeddings" and embeddings is None:
            embeddings_from = self.vocab.name_or_dir
            embeddings = load_word_embeddings(embeddings_from)
        hidden = cfg.hidden_dim or (int(embeddings.shape[1]) if embeddings is not None else 384)
        head_cfg = D2SHeadConfig(
            input_dim=input_dim,
            hidden_dim=hidden,
            vocab_size=len(self.vocab),
            init=cfg.init,
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
        """Vocabulary ids the head may output: non-special tokens, of the training captions with
        ``output_vocab="captions"``."""
        allowed = ~self.vocab.special_mask
        if cfg.output_vocab in ("captions", "caption-words"):
            allowed &= np.asarray((own_train > 0).sum(axis=0)).ravel() > 0
        if cfg.output_vocab == "caption-words":
            allowed &= ~np.char.startswith(np.asarray(self.vocab.tokens), "##")
        return np.flatnonzero(allowed).astype(np.int64)

    @staticmethod
    def _lr_factor(step: int, total: int, warmup: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    # -- training -------------------------------------------------------------------------------------
    def fit(self, data: PairedVectors, dense_encoder: str | None = None) -> TrainResult:
        """Train on ``data``'s training pairs, validate on its validation pairs, return the best head."""
        data.validate()
        train, val = data.train_and_validation()
        if len(train) < 2:
            raise ValueError(f"{data.name}: need at least 2 training captions, got {len(train)}")
        if train.dim < 1:
            raise ValueError(f"{data.name}: the vectors have dimension 0")
        cfg = self.resolve(data)
        logger.info("training recipe: %s", cfg.recipe_values())
        dev = self.device
        started = time.perf_counter()

        own_full = ids_to_csr(self.vocab.token_ids(train.caption_texts), len(self.vocab))
        columns = self.output_columns(cfg, own_full)
        own_train = own_full[:, columns]
        df = self.vocab.document_frequency(own_train)
        control = ExpansionControl(cfg.exp, cfg.epochs, df, cfg.caption_draw, cfg.own_terms)
        token_rows = _TokenRows(own_train, dev)
        val_own = None
        if cfg.exp == "0":  # a model trained without expansion is validated without it
            val_ids = ids_to_csr(self.vocab.token_ids(val.caption_texts), len(self.vocab))[:, columns]
            val_own = _TokenRows(val_ids.tocsr(), dev)

        full_head = self.new_head(train.dim, dense_encoder, cfg)
        if cfg.proj_init == "pca":
            pca_init_(full_head.proj, np.concatenate([train.image_vectors, train.caption_vectors]))
        head = _TrainingHead(full_head, columns).to(dev)
        loss_fn = D2SLoss(tau=cfg.tau, lam=cfg.lam, eta=cfg.eta, regulariser=cfg.regulariser)
        graphed = cfg.cuda_graph and GraphedStep.supported(dev)
        base_lrs = [
            cfg.lr_proj,
            cfg.lr_vocab,
            cfg.lr_vocab if cfg.lr_vocab_bias is None else cfg.lr_vocab_bias,
        ]
        optimizer = torch.optim.AdamW(
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
        generator = torch.Generator().manual_seed(cfg.seed)  # batch order (host)
        mask_generator = torch.Generator(device=dev).manual_seed(cfg.seed + 1)  # expansion draws (device)

        n = len(train)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        warmup = int(total_steps * cfg.warmup_ratio)

        z_cap = torch.from_numpy(train.caption_vectors).to(dev)
        z_img = torch.from_numpy(train.image_vectors).to(dev)
        cap_img = torch.from_numpy(train.caption_image).to(dev)
        val_tensors = (
            torch.from_numpy(val.caption_vectors).to(dev),
            torch.from_numpy(val.image_vectors).to(dev),
            torch.from_numpy(val.caption_image).to(dev),
        )

        start_epoch, best_score, best_epoch, best_state, history = 0, -1.0, -1, None, []
        fingerprint = _fingerprint(train, columns)
        ckpt = self._load_checkpoint(fingerprint, cfg)
        if ckpt is not None:
            head.load_state_dict(ckpt["head"])
            optimizer.load_state_dict(ckpt["optimizer"])
            generator.set_state(ckpt["generator"])
            mask_generator.set_state(ckpt["mask_generator"])
            start_epoch, best_score, best_epoch = ckpt["epoch"], ckpt["best_score"], ckpt["best_epoch"]
            best_state, history = ckpt["best_state"], ckpt["history"]
            logger.info("resuming from %s at epoch %d", self.checkpoint_dir, start_epoch)

        # a captured step reads the learning rates from device tensors; set after a resume too, since a
        # checkpoint written by a GPU run may be resumed on the CPU and vice versa
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = torch.tensor(lr, device=dev) if graphed else lr
            group["capturable"] = graphed
        # schedule values the step reads from the device, updated in place (a CUDA graph sees the updates)
        p_c = torch.zeros((), device=dev)
        p_k = torch.ones(len(columns), device=dev)
        l1_factor = torch.ones((), device=dev)
        use_amp = cfg.amp and dev.type == "cuda"

        def train_step(rows: torch.Tensor) -> torch.Tensor:
            zc, zi = z_cap[rows], z_img[cap_img[rows]]
            expansion = control.draw(token_rows.mask(rows), p_c, p_k, mask_generator)
            # no autocast weight cache: a graph replay must recast the weights the optimiser changed
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp, cache_enabled=False):
                s_cap = head(zc, mask=expansion)
                s_img = head(zi)
                parts = loss_fn(s_img, s_cap, zi, zc, l1_factor=l1_factor)
            parts.total.backward()
            optimizer.step()
            return parts.total.detach()

        def eager_step(rows: torch.Tensor) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            return train_step(rows)

        run_step = (
            GraphedStep(train_step, optimizer, cfg.batch_size, dev, generators=[mask_generator])
            if graphed
            else eager_step
        )
        first_eligible = _first_eligible_epoch(cfg)
        bar = tqdm(
            range(start_epoch, cfg.epochs),
            initial=start_epoch,
            total=cfg.epochs,
            desc=f"D2S exp={cfg.exp} η={cfg.eta:g}",
            disable=not self.progress,
            unit="epoch",
        )
        for epoch in bar:
            head.train()
            perm = torch.randperm(n, generator=generator).to(dev)
            p_c.fill_(control.caption_prob(epoch))
            p_k.copy_(control.word_probs(epoch))
            epoch_loss = torch.zeros((), device=dev)  # summed on the device: no host sync per step
            for b in range(steps_per_epoch):
                step = epoch * steps_per_epoch + b
                factor = self._lr_factor(step, total_steps, warmup)
                for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    if graphed:
                        group["lr"].fill_(lr * factor)
                    else:
                        group["lr"] = lr * factor
                l1_factor.fill_(l1_warmup_factor(step, warmup) if cfg.l1_warmup else 1.0)
                rows = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                if len(rows) < 2:
                    continue  # a softmax over one candidate carries no signal
                loss = run_step(rows)
                epoch_loss += loss
                for cb in self.callbacks:
                    cb("step", {"epoch": epoch, "step": b, "loss": loss})

            metrics = self._validate(head, val_tensors, val_own, cfg.eval_batch_size)
            loss_value = float(epoch_loss) / steps_per_epoch
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch + 1} (loss {loss_value}); lower the learning rates"
                )
            record = {"epoch": epoch + 1, "loss": loss_value, "p_c": control.caption_prob(epoch), **metrics}
            history.append(record)
            # selection by validation MRR (steadier than R@1 on a few dozen images), among eligible epochs;
            # a tie goes to the later, sparser epoch
            if epoch + 1 >= first_eligible and metrics["mrr"] >= best_score:
                best_score, best_epoch = metrics["mrr"], epoch + 1
                best_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                r1=f"{metrics['r1']:.3f}",
                flops=f"{metrics['flops']:.1f}",
                q_nnz=f"{metrics['q_nnz']:.0f}",
                d_nnz=f"{metrics['d_nnz']:.0f}",
            )
            self._save_checkpoint(
                {
                    "epoch": epoch + 1,
                    "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "mask_generator": mask_generator.get_state(),
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "history": history,
                    "config": asdict(cfg),
                    "fingerprint": fingerprint,
                }
            )
            for cb in self.callbacks:
                cb("epoch", record)
        bar.close()

        head.cpu().write_into(full_head, best_state)
        if cfg.output_vocab != "all":
            full_head.set_output_tokens(columns)
        best_r1 = next(r["r1"] for r in history if r["epoch"] == best_epoch)
        full_head.config.extra = {
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
            "best_epoch": best_epoch,
            "val_r1": best_r1,
            "val_mrr": best_score,
            "output_tokens": len(columns),
            "trained_on": data.name,
        }
        return TrainResult(full_head, best_epoch, best_r1, history, time.perf_counter() - started, cfg)

    @torch.no_grad()
    def _validate(
        self, head: nn.Module, val_tensors, val_own: _TokenRows | None, bs: int
    ) -> dict[str, float]:
        """Caption→image R@1 and MRR (full ranking) over exact sparse scores, FLOPs (Eq. 1), mean non-zeros.

        The gold image must score above 0 to count (an inverted index never returns a score-0 image), and
        ties are ranked pessimistically, so a head that scores everything alike is not rewarded.
        """
        head.eval()
        z_cap, z_img, gold = val_tensors
        s_img = torch.cat([head(z_img[i : i + bs]) for i in range(0, len(z_img), bs)])
        d_counts = torch.count_nonzero(s_img, dim=0).double()
        q_counts = torch.zeros_like(d_counts)
        hits, rr, q_nnz = 0, 0.0, 0.0
        for i in range(0, len(z_cap), bs):
            rows = torch.arange(i, min(i + bs, len(z_cap)), device=z_cap.device)
            s_cap = head(z_cap[rows], mask=None if val_own is None else val_own.mask(rows))
            scores = sparse_scores(s_cap, s_img)
            g = gold[i : i + bs]
            gold_score = scores.gather(1, g[:, None]).squeeze(1)
            rank = (scores >= gold_score[:, None]).sum(dim=1)  # 1 = first; ties count against the gold
            found = gold_score > 0
            hits += int(((rank == 1) & found).sum())
            rr += float(
                torch.where(
                    found, 1.0 / rank.double(), torch.zeros_like(gold_score, dtype=torch.double)
                ).sum()
            )
            nz = torch.count_nonzero(s_cap, dim=0).double()
            q_counts += nz
            q_nnz += float(nz.sum())
        head.train()
        n_c, n_i = len(z_cap), len(z_img)
        return {
            "r1": hits / n_c,
            "mrr": rr / n_c,
            "flops": flops_from_counts(q_counts.cpu().numpy(), d_counts.cpu().numpy(), n_c, n_i),
            "q_nnz": q_nnz / n_c,
            "d_nnz": float(d_counts.sum()) / n_i,
        }

    # -- checkpoints ----------------------------------------------------------------------------------
    def _load_checkpoint(self, fingerprint: dict, cfg: TrainConfig) -> dict | None:
        if self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / CHECKPOINT_NAME
        if not path.is_file():
            return None
        try:
            # weights_only: plain tensors and containers, no arbitrary pickle code
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file: torch raises RuntimeError, EOFError, ...
            raise ValueError(
                f"{path} is not a readable checkpoint ({type(e).__name__}); delete it, or run d2s train "
                "with --restart, to start afresh"
            ) from e
        if not isinstance(ckpt, dict) or "best_score" not in ckpt:
            raise ValueError(f"{path} is not a checkpoint of this version; delete it to start afresh")
        saved, current = _training_settings(ckpt.get("config")) or {}, _training_settings(asdict(cfg))
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            shown = ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
            raise ValueError(
                f"{path} was written with other settings ({shown}); use another --out, or --restart to "
                "start afresh"
            )
        if ckpt.get("fingerprint") != fingerprint:
            old = ckpt.get("fingerprint") or {}
            what = [k for k in ("images", "captions", "dim") if old.get(k) != fingerprint[k]]
            detail = ", ".join(f"{k} {old.get(k)} -> {fingerprint[k]}" for k in what) or (
                "same sizes, other ids, vectors or texts"
            )
            raise ValueError(
                f"{path} was written for other training data ({detail}); use another --out, or --restart "
                "to start afresh"
            )
        return ckpt

    def _save_checkpoint(self, state: dict) -> None:
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / CHECKPOINT_NAME
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a kill leaves the previous checkpoint or the new one, never half


@torch.no_grad()
def pca_init_(proj: nn.Linear, vectors: np.ndarray) -> None:
    """Set ``proj`` (W1, d -> ω) to the projection onto the leading principal directions of ``vectors``.

    ``W1 z + b`` is then the centred vector in its top-ω principal coordinates, so the head starts from the
    dense geometry instead of a random projection of it; rows past the rank of ``vectors`` stay zero.
    """
    z = np.asarray(vectors, dtype=np.float64)
    mean = z.mean(axis=0)
    _, sv, vt = np.linalg.svd(z - mean, full_matrices=False)
    weight = np.zeros((proj.out_features, proj.in_features))
    rank = int((sv > 1e-8 * max(float(sv[0]) if len(sv) else 0.0, 1e-30)).sum())
    m = min(proj.out_features, rank)
    weight[:m] = vt[:m]
    proj.weight.copy_(torch.from_numpy(weight).to(proj.weight.dtype))
    proj.bias.copy_(torch.from_numpy(-(weight @ mean)).to(proj.bias.dtype))


def _first_eligible_epoch(cfg: TrainConfig) -> int:
    """First epoch (1-based) the best head may come from: after ``select_from`` of the run, and never before
    the L1 warm-up is over (a head is not sparse before), capped at the last epoch."""
    after_share = math.floor(cfg.select_from * cfg.epochs) + 1
    after_warmup = (
        math.ceil(cfg.warmup_ratio * cfg.epochs) + 1 if cfg.l1_warmup and cfg.select_from > 0 else 1
    )
    return min(cfg.epochs, max(after_share, after_warmup))


def _fingerprint(train: PairedVectors, columns: np.ndarray) -> dict:
    """What a resumed run must share with the checkpoint: sizes and a digest of the data and outputs.

    Equal shapes are not enough (another data set of the same size would resume silently), so the digest
    covers the vectors, the caption texts and links, and the output columns.
    """
    h = hashlib.sha256()
    for ident in (*train.image_ids, *train.caption_ids):
        h.update(str(ident).encode("utf-8", "surrogatepass") + b"\0")
    for arr in (train.image_vectors, train.caption_vectors, train.caption_image, columns):
        h.update(np.ascontiguousarray(arr).tobytes())
    for text in train.caption_texts:
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return {"images": len(train.image_ids), "captions": len(train), "dim": train.dim, "sha256": h.hexdigest()}
