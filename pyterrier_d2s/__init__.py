"""pyterrier-d2s: Dense2Sparse multimodal learned sparse retrieval for PyTerrier.

Public names are few and imported lazily, so that ``pyterrier_d2s.training`` (e.g. a GPU training job) never
imports PyTerrier; submodules (``vocab``, ``head``, ``training``, ``data``, ``index``, ``evaluation``,
``experiment``) hold the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "D2S": ".model",
    "D2SHead": ".head",
    "D2SHeadConfig": ".head",
    "D2SImageIndexer": ".pipeline",
    "D2SIndex": ".index",
    "D2SQueryEncoder": ".pipeline",
    "D2STrainer": ".training",
    "ExpansionRescorer": ".pipeline",
    "TrainConfig": ".training",
    "Vocabulary": ".vocab",
    "load_pairs": ".data",
}

__all__ = [  # the names of _PUBLIC, spelled out for tools
    "D2S",
    "D2SHead",
    "D2SHeadConfig",
    "D2SImageIndexer",
    "D2SIndex",
    "D2SQueryEncoder",
    "D2STrainer",
    "ExpansionRescorer",
    "TrainConfig",
    "Vocabulary",
    "load_pairs",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from .data import load_pairs
    from .head import D2SHead, D2SHeadConfig
    from .index import D2SIndex
    from .model import D2S
    from .pipeline import D2SImageIndexer, D2SQueryEncoder, ExpansionRescorer
    from .training import D2STrainer, TrainConfig
    from .vocab import Vocabulary


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
