"""TrainConfig: the hyper-parameters of a D2S training run, checked when it is made.

``None`` fields are set by the recipe from the training data (:mod:`pyterrier_d2s.training.recipe`) in
:meth:`TrainConfig.resolved`; an explicit value overrides the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .expansion import EXPANSION_MODES, ExpansionControl
from .loss import D2SLoss
from .recipe import PAPER_TAU, RECIPES, TrainingSetShape, recipe_for, tau_for

__all__ = ["CANDIDATES", "INITS", "NEGATIVES", "OUTPUT_VOCABS", "PROJ_INITS", "RECIPE_KEYS", "TrainConfig"]

# options a recipe sets when the config leaves them at None
RECIPE_KEYS = (
    "epochs",
    "batch_size",
    "lr_proj",
    "lr_vocab",
    "warmup_ratio",
    "output_vocab",
    "select_from",
    "init",
    "tau",
    "candidates",
)
OUTPUT_VOCABS = ("all", "captions", "caption-words")
PROJ_INITS = ("default", "pca")
INITS = ("embeddings", "random", "text-space")
NEGATIVES = ("global", "local")
CANDIDATES = ("batch", "all-images")

#: the generalisation-gap options (TrainConfig fields, off by default); a head records those a run set
GAP_OPTIONS = (
    "hidden_dropout",
    "input_noise",
    "input_dropout",
    "ema_decay",
    "l2sp_proj",
    "l2sp_vocab",
    "candidates",
    "ridge_all_captions",
)

# fields that must be finite numbers when they are set
_FINITE_FIELDS = (
    "eta",
    "lam",
    "tau",
    "lr_proj",
    "lr_vocab",
    "lr_vocab_bias",
    "warmup_ratio",
    "select_from",
    "hidden_dropout",
    "input_noise",
    "input_dropout",
    "ema_decay",
    "l2sp_proj",
    "l2sp_vocab",
)
# (field, test, requirement): a set value must pass the test, or "<field> must be <requirement>, not <value>"
_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("lr_proj", lambda v: v >= 0, ">= 0"),
    ("lr_vocab", lambda v: v >= 0, ">= 0"),
    ("lr_vocab_bias", lambda v: v >= 0, ">= 0"),
    ("warmup_ratio", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("epochs", lambda v: v >= 1, ">= 1"),
    ("batch_size", lambda v: v >= 2, ">= 2"),
    ("own_token_fit", lambda v: v >= 0, ">= 0"),
    ("hidden_dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("input_noise", lambda v: v >= 0, ">= 0"),
    ("input_dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("ema_decay", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("l2sp_proj", lambda v: v >= 0, ">= 0"),
    ("l2sp_vocab", lambda v: v >= 0, ">= 0"),
)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, not {value!r}")


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
    tau: float | None = None  # teacher τ; None: the recipe's (the paper's 1e-3; 0.01 with "all-images")
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
    init: str | None = None  # W2 (and W1): "embeddings", "random" or "text-space" (see training.text_space)
    own_token_fit: int = 0  # steps of training.text_space.fit_own_tokens_ after the text-space start; 0: off
    proj_init: str = "default"  # W1: torch's default, or "pca" (the training vectors' principal directions)
    regulariser: str = "l1"  # Eq. 7's L1, or "flops" (SPLADE's FLOPS regulariser; not the paper's)
    seed: int = 42
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    cuda_graph: bool = True  # replay the training step as a CUDA graph (CUDA only; same maths, ~3x faster)
    eval_batch_size: int = 1024
    # under torchrun: in-batch negatives over the global batch (the one-process loss; gathers the |V|-wide
    # outputs every step) or over each rank's own rows ("local": nothing gathered, not the one-process loss)
    negatives: str = "global"
    # regularisers of the generalisation gap (issue 10; all off by default, measured in the README):
    hidden_dropout: float = 0.0  # dropout on the hidden vector LN(W1 z) in training steps
    input_noise: float = 0.0  # Gaussian noise of about this norm on the student's input vectors z
    input_dropout: float = 0.0  # dropout on the student's input vectors z (the teacher sees them clean)
    ema_decay: float = 0.0  # validate and return an exponential moving average of the weights (0: off)
    l2sp_proj: float = 0.0  # weight of ||W1 - W1_start||² in the loss (L2-SP)
    l2sp_vocab: float = 0.0  # weight of ||W2 - W2_start||² (the output rows) in the loss
    # the images each step's captions are scored against: the batch's (the paper), or every training image;
    # None: the recipe's
    candidates: str | None = None
    # text-space start: an image's ridge target is the mean embedding of all its caption texts
    # (data.meta["image_captions"], e.g. captions_all.jsonl), not only of those with vectors
    ridge_all_captions: bool = False

    def __post_init__(self):
        # the checks run in this order, so a config with several bad values names the same one as before
        _check_choice("exp", self.exp, EXPANSION_MODES)
        _check_choice("recipe", self.recipe, RECIPES)
        self._check_finite()
        # validates tau, lam, eta, regulariser (tau None: the recipe sets it)
        D2SLoss(PAPER_TAU if self.tau is None else self.tau, self.lam, self.eta, self.regulariser)
        self._check_ranges()
        if self.output_vocab is not None:
            _check_choice("output_vocab", self.output_vocab, OUTPUT_VOCABS)
        if self.select_from is not None and not 0.0 <= self.select_from < 1.0:
            raise ValueError(f"select_from must be in [0, 1), not {self.select_from}")
        ExpansionControl(self.exp, 1, np.zeros(1), self.caption_draw, self.own_terms)  # validates both
        _check_choice("proj_init", self.proj_init, PROJ_INITS)
        _check_choice("negatives", self.negatives, NEGATIVES)
        if self.candidates is not None:
            _check_choice("candidates", self.candidates, CANDIDATES)
        if self.init is not None:
            _check_choice("init", self.init, INITS)
            if self.init == "text-space" and self.proj_init != "default":
                raise ValueError(
                    f"init='text-space' sets W1 itself; it cannot be combined with proj_init={self.proj_init!r}"
                )
        if self.own_token_fit and self.init not in (None, "text-space"):
            raise ValueError(f"own_token_fit needs init='text-space', not init={self.init!r}")

    @property
    def stochastic_step(self) -> bool:
        """Whether a step draws noise besides the expansion masks (dropout or input noise)."""
        return bool(self.hidden_dropout or self.input_noise or self.input_dropout)

    def _check_finite(self) -> None:
        for name in _FINITE_FIELDS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")

    def _check_ranges(self) -> None:
        for name, ok, requirement in _RANGES:
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise ValueError(f"{name} must be {requirement}, not {value}")

    def resolved(self, shape: TrainingSetShape) -> TrainConfig:
        """A copy with every ``None`` recipe field set from ``recipe`` for a training set of ``shape``."""
        chosen = recipe_for(self.recipe, shape)
        if chosen["init"] == "text-space" and (
            self.proj_init != "default" or self.hidden_dim not in (None, 384)
        ):
            chosen["init"] = "embeddings"  # an explicit W1 initialisation or width asks for the paper's start
        if self.candidates is not None:  # τ follows explicit candidates: 0.01 over all images, else 1e-3
            chosen["tau"] = tau_for(self.candidates)
        # replace() re-runs the checks: own_token_fit with a recipe that starts elsewhere is refused there
        return replace(self, **{k: chosen[k] for k in RECIPE_KEYS if getattr(self, k) is None})

    def recipe_values(self) -> dict[str, Any]:
        """The values of the recipe fields (after :meth:`resolved`), as recorded in reports and configs."""
        return {"recipe": self.recipe, **{k: getattr(self, k) for k in RECIPE_KEYS}}
