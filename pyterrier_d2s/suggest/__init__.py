"""Image suggestion with multimodal learned sparse retrieval (arXiv 2402.07736): M1-M4 on D2S's vocabulary,
index and engines.

Modules, bottom up: :mod:`.encoders` (MLP / MLM sparse text encoders over a ``transformers`` backbone),
:mod:`.presets` (M1-M4), :mod:`.model` (the bi-encoder, save/load), :mod:`.trainer` (InfoNCE training with
checkpoints), :mod:`.task` (the five-caption task), :mod:`.pipeline` (PyTerrier query / document encoders) and
:mod:`.experiment` (M1-M4 vs BM25, dense and D2S). The first four never import PyTerrier or the index (an
import-linter contract), and this package imports nothing until a name is asked for, so a training job that
imports :mod:`.trainer` does not load PyTerrier either.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "PRESETS": "presets",
    "Preset": "presets",
    "SuggestBiEncoder": "model",
    "SuggestConfig": "model",
    "BiEncoderTrainer": "trainer",
    "BiEncoderTrainConfig": "trainer",
    "SuggestPairs": "trainer",
    "EvaluationSet": "task",
    "SuggestTask": "task",
    "build_task": "task",
    "SuggestModel": "pipeline",
    "SuggestSettings": "experiment",
    "run_image_suggestion": "experiment",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
