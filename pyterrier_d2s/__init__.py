"""pyterrier-d2s: Dense2Sparse multimodal learned sparse retrieval for PyTerrier.

Public names are few and imported lazily, so that ``pyterrier_d2s.training`` (e.g. a GPU training job) never
imports PyTerrier; submodules (``vocab``, ``head``, ``training``, ``data``, ``index``, ``evaluation``,
``experiment``, and ``query_encoder`` / ``image_indexer`` / ``rescorer``, the transformers the ``D2S`` model
hands out) hold the rest.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "D2S": ".model",
    "D2SHead": ".head",
    "D2SHeadConfig": ".head",
    "D2SImageIndexer": ".image_indexer",
    "D2SIndex": ".index",
    "D2SQueryEncoder": ".query_encoder",
    "D2STrainer": ".training",
    "ExpansionRescorer": ".rescorer",
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
    from .image_indexer import D2SImageIndexer
    from .index import D2SIndex
    from .model import D2S
    from .query_encoder import D2SQueryEncoder
    from .rescorer import ExpansionRescorer
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


def _register_atomic_from_env() -> None:
    """With ``D2S_ATOMIC_DIR`` set, ``d2s-atomic/<split>`` names resolve in ir_datasets (and in
    ``pt.get_dataset("irds:...")``). Only then is ir_datasets imported: it costs half a second."""
    if os.environ.get("D2S_ATOMIC_DIR"):
        from .data.atomic.irds import register_env

        register_env()


_register_atomic_from_env()
