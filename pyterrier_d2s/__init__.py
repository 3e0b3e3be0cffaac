"""pyterrier-d2s: Dense2Sparse multimodal learned sparse retrieval for PyTerrier.

Public names are kept few; submodules (``vocab``, ``head``, ``training``, ``data``, ``evaluation``) hold the rest.
"""

from .data import load_pairs
from .head import D2SHead, D2SHeadConfig
from .training import D2STrainer, TrainConfig
from .vocab import Vocabulary

__version__ = "0.1.0"

__all__ = ["D2SHead", "D2SHeadConfig", "D2STrainer", "TrainConfig", "Vocabulary", "load_pairs", "__version__"]
