"""Training of the D2S head. Never imports PyTerrier."""

from .config import TrainConfig
from .expansion import EXPANSION_MODES, ExpansionControl
from .loss import D2SLoss, distillation_ce, l1_norm, sparse_scores
from .schedule import l1_warmup_factor
from .trainer import D2STrainer, TrainResult

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
