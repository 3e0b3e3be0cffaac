"""The PISA engine: PISA dynamic pruning over quantised impacts (:mod:`.engine`), the quantisation and its
error bound (:mod:`.quantisation`), and the one module that knows pyterrier-pisa's internals
(:mod:`._pyterrier_pisa`)."""

from . import quantisation
from ._pyterrier_pisa import bm25_text_retriever
from .engine import DEFAULT_ALGORITHM, DEFAULT_MAX_MASS_LOSS, PisaCollection, PisaEngine

__all__ = ["bm25_text_retriever", "DEFAULT_ALGORITHM", "DEFAULT_MAX_MASS_LOSS", "PisaCollection", "PisaEngine", "quantisation"]
