"""Training of the D2S head. Never imports PyTerrier."""

from .expansion import EXPANSION_MODES, ExpansionControl
from .loss import D2SLoss, distillation_ce, l1_norm, l1_warmup_factor, sparse_scores
from .trainer import D2STrainer, TrainConfig, TrainResult

__all__ = [
    "EXPANSION_MODES",
    "ExpansionControl",
    "D2SLoss",
    "distillation_ce",
    "l1_norm",
    "l1_warmup_factor",
    "sparse_scores",
    "D2STrainer",
    "TrainConfig",
    "TrainResult",
]
