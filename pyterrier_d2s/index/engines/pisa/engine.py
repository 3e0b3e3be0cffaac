"""``engine="pisa"``: PISA (through pyterrier-pisa) over quantised impacts, with dynamic pruning.

Built from the forward store on first use, like the other engines with files, into
``<index>/engines/pisa-v1-<build settings>/``: the document weights are quantised to integer impacts
``floor(s * w)`` (document scale ``s``: the smallest of :data:`~.quantisation.SCALE_LADDER` losing less than
``max_mass_loss`` of the weight mass, unless ``scale`` is given) and written as a PISA collection, which PISA
compresses at once. Query weights are quantised here, in float64 (``floor(t * w)`` copies of each term, ``t``
the query scale ``toks_scale``, by default ``s``), and PISA's integer scores are divided by ``s * t`` back
into float dot-product units; results are within :meth:`PisaCollection.error_bound` of the exact scores, not
exact. Terms the index does not know were already dropped by the caller, so PISA's lower-casing of query
terms cannot make an unknown term match. pyterrier-pisa itself is used only through :mod:`._pyterrier_pisa`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from .._base import Engine, Hits, QueryBatch, cached_build, engine_info, require
from . import quantisation

if TYPE_CHECKING:  # pragma: no cover
    from ...core import D2SIndex
    from ._pyterrier_pisa import Searcher

logger = logging.getLogger(__name__)

VERSION = 1

#: Default PISA query algorithm: the fastest measured on expanded D2S-like queries. ``benchmarks/retrieval_latency.py
#: --algorithms-only`` (123k docs, one thread, ms/query end to end at k=10; FLOPs ~11 | ~80):
#: maxscore 20.9 | 155, block_max_maxscore 30.0 | 292, ranked_or (exhaustive) 28.6 | 254, wand 72.5 | 706,
#: block_max_wand (pyterrier-pisa's default) 88.5 | 752. Queries with hundreds of terms defeat WAND's pivoting
#: and block-max skipping, while MaxScore cheaply sets aside the many low-impact terms.
DEFAULT_ALGORITHM = "maxscore"
#: Largest fraction of weight mass that truncation may lose (documents when choosing the scale, and queries
#: checked at retrieval time).
DEFAULT_MAX_MASS_LOSS = 0.005
# Largest impact PISA's uint32 postings can hold.
_MAX_IMPACT = 2**32 - 1


def quantise_documents(matrix: sp.csr_matrix, scale: float) -> sp.csr_matrix:
    """Integer impacts ``floor(scale * w)`` of a documents x terms float matrix, without explicit zeros.

    Raises:
        ValueError: if an impact overflows PISA's uint32, or no weight reaches ``1 / scale`` (PISA aborts the
            whole process on an index without postings).
    """
    impacts = quantisation.quantise(matrix.data, scale)
    if impacts.size and impacts.max() > _MAX_IMPACT:
        raise ValueError(f"scale {scale} overflows PISA's uint32 impacts (max weight {matrix.data.max()})")
    # copies: eliminate_zeros() works in place and must not touch the caller's float matrix
    q = sp.csr_matrix((impacts, matrix.indices.copy(), matrix.indptr.copy()), shape=matrix.shape)
    q.eliminate_zeros()
    if q.nnz == 0:
        raise ValueError(f"no document weight reaches 1/scale = {1 / scale:g}: nothing to put in PISA")
    return q


@dataclass
class PisaCollection:
    """One built PISA collection of an index (one per build setting), with its quantisation.

    Attributes:
        path: its directory.
        doc_scale: document quantisation scale ``s``.
        max_mass_loss: the mass-loss limit it was built for (also the query-side warning threshold).
        info: what its build recorded (``doc_mass_lost``, ``pisa_terms``, ``pisa_postings``, ...).
    """

    index: D2SIndex
    path: Path
    doc_scale: float
    max_mass_loss: float
    info: dict
    _searcher: Searcher | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def query_scale(self) -> float:
        """Default query scale ``t``: the document scale (queries come from the same head, so their weights
        have a similar scale)."""
        return self.doc_scale

    def searcher(self) -> Searcher:
        """The loaded PISA collection (loaded on first use)."""
        with self._lock:
            if self._searcher is None:
                from ._pyterrier_pisa import Searcher

                self._searcher = Searcher(self.path)
        return self._searcher

    def _known_weights(self, queries: Iterable[Mapping[str, float]]) -> list[float]:
        known = self.index.forward().term_index
        return [w for q in queries for k, w in q.items() if k in known]

    def query_mass_loss(
        self, queries: Iterable[Mapping[str, float]], toks_scale: float | None = None
    ) -> float:
        """Fraction of the query weight mass (on indexed terms) that truncation at ``toks_scale`` loses."""
        t = self.query_scale if toks_scale is None else float(toks_scale)
        return quantisation.mass_loss(self._known_weights(queries), t)

    def choose_query_scale(
        self, queries: Iterable[Mapping[str, float]], max_mass_loss: float | None = None
    ) -> float:
        """Smallest query scale losing < ``max_mass_loss`` (default: the collection's) of a sample's mass."""
        target = self.max_mass_loss if max_mass_loss is None else max_mass_loss
        return quantisation.choose_scale(self._known_weights(queries), target)

    def error_bound(self, query_toks: Mapping[str, float], toks_scale: float | None = None) -> float:
        """Bound ``B(q)`` on ``|PISA score - exact score|`` for this query and any document of the index."""
        t = self.query_scale if toks_scale is None else float(toks_scale)
        return quantisation.query_error_bound(query_toks, self.index.forward().term_max, self.doc_scale, t)


class PisaEngine(Engine):
    """PISA top-k retrieval over quantised impacts (approximately exact: see the quantisation error bound).

    Settings:
        algorithm: PISA query algorithm (``maxscore`` default; ``block_max_wand``, ``wand``,
            ``block_max_maxscore``, ``ranked_or``, ...).
        toks_scale: query scale ``t``; ``None`` uses the collection's ``query_scale``.
        scale: document scale ``s`` (a build setting); ``None`` picks the smallest that loses less than
            ``max_mass_loss`` of the weight mass.
        max_mass_loss: see :data:`DEFAULT_MAX_MASS_LOSS` (a build setting).

    ``doc_scale``, ``query_scale``, :meth:`error_bound`, :meth:`choose_query_scale` and
    :meth:`query_mass_loss` describe the collection of the default build settings; :meth:`collection` gives
    the one of other settings.
    """

    name: ClassVar[str] = "pisa"
    exact: ClassVar[bool] = False
    settings: ClassVar[dict[str, Any]] = {
        "algorithm": DEFAULT_ALGORITHM,
        "toks_scale": None,
        "scale": None,
        "max_mass_loss": DEFAULT_MAX_MASS_LOSS,
    }

    def __init__(self, index: D2SIndex):
        super().__init__(index)
        self._collections: dict[tuple, PisaCollection] = {}
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def check_available(cls) -> None:
        require("pyterrier_pisa", None, cls.name, "pip install pyterrier-pisa")

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` completed with defaults, the algorithm checked (TypeError / ValueError)."""
        from ._pyterrier_pisa import query_algorithm

        out = super().validate_settings(settings)
        out["algorithm"] = query_algorithm(out["algorithm"])
        return out

    # ---- the collection -------------------------------------------------------------------------------
    def collection(
        self, scale: float | None = None, max_mass_loss: float = DEFAULT_MAX_MASS_LOSS
    ) -> PisaCollection:
        """The PISA collection of these build settings (built and cached in the index directory on first use)."""
        key = (None if scale is None else float(scale), float(max_mass_loss))
        with self._lock:
            coll = self._collections.get(key)
            if coll is None:
                tag = {"mml": key[1]} if scale is None else {"s": key[0]}
                path = cached_build(self.index, self.name, VERSION, lambda tmp: self._build(tmp, *key), tag)
                info = engine_info(path)
                coll = PisaCollection(self.index, path, float(info["doc_scale"]), key[1], info)
                self._collections[key] = coll
        return coll

    def _build(self, tmp: Path, scale: float | None, max_mass_loss: float) -> dict:
        from . import _pyterrier_pisa as adapter

        fwd = self.index.forward()
        matrix = fwd.matrix
        doc_scale = (
            float(scale) if scale is not None else quantisation.choose_scale(matrix.data, max_mass_loss)
        )
        lost = quantisation.mass_loss(matrix.data, doc_scale)
        (logger.warning if lost >= max_mass_loss else logger.info)(
            "PISA engine: document scale %g loses %.4f%% of the weight mass (limit %.4f%%)",
            doc_scale,
            100 * lost,
            100 * max_mass_loss,
        )
        stats = adapter.write_collection(tmp, quantise_documents(matrix, doc_scale), fwd.terms, fwd.docnos)
        adapter.warm(tmp)  # inside the temporary directory: the finished engine files are complete
        return {"doc_scale": doc_scale, "max_mass_loss": max_mass_loss, "doc_mass_lost": lost, **stats}

    def prepare(self, scale: float | None = None, max_mass_loss: float = DEFAULT_MAX_MASS_LOSS) -> None:
        """Build (or load) and open the collection of these build settings now."""
        self.collection(scale, max_mass_loss).searcher()

    @property
    def doc_scale(self) -> float:
        """Document scale ``s`` of the default collection."""
        return self.collection().doc_scale

    @property
    def query_scale(self) -> float:
        """Default query scale ``t`` of the default collection."""
        return self.collection().query_scale

    def query_mass_loss(
        self, queries: Iterable[Mapping[str, float]], toks_scale: float | None = None
    ) -> float:
        """See :meth:`PisaCollection.query_mass_loss` (default collection)."""
        return self.collection().query_mass_loss(queries, toks_scale)

    def choose_query_scale(
        self, queries: Iterable[Mapping[str, float]], max_mass_loss: float | None = None
    ) -> float:
        """See :meth:`PisaCollection.choose_query_scale` (default collection)."""
        return self.collection().choose_query_scale(queries, max_mass_loss)

    def error_bound(self, query_toks: Mapping[str, float], toks_scale: float | None = None) -> float:
        """See :meth:`PisaCollection.error_bound` (default collection)."""
        return self.collection().error_bound(query_toks, toks_scale)

    # ---- queries --------------------------------------------------------------------------------------
    def _quantise(self, queries: QueryBatch, t: float, max_mass_loss: float) -> list[dict[str, float]]:
        terms = self.index.forward().terms
        quantised = []
        kept_mass = total_mass = 0.0
        for i in range(len(queries)):
            ids, ws = queries.row(i)
            q = {}
            for term, w in zip(terms[ids].tolist(), ws.tolist(), strict=True):
                total_mass += w
                n = math.floor(w * t)
                if n > 0:
                    q[term] = float(n)
                    kept_mass += n / t
            quantised.append(q)
        lost = (total_mass - kept_mass) / total_mass if total_mass > 0 else 0.0
        logger.debug("query scale %g loses %.4f%% of the batch's query weight mass", t, 100 * lost)
        if lost >= max_mass_loss and not self._warned:
            self._warned = True  # once per engine: single-query batches would flood the log
            logger.warning(
                "query scale %g loses %.3f%% of this batch's query weight mass (limit %.3f%%); "
                "pass toks_scale=index.engine('pisa').choose_query_scale(sample) to the retriever",
                t,
                100 * lost,
                100 * max_mass_loss,
            )
        return quantised

    def search(
        self,
        queries: QueryBatch,
        k: int,
        *,
        threads: int = 1,
        algorithm: str = DEFAULT_ALGORITHM,
        toks_scale: float | None = None,
        scale: float | None = None,
        max_mass_loss: float = DEFAULT_MAX_MASS_LOSS,
        progress: Callable[[int], Any] | None = None,
    ) -> Hits:
        """PISA's top ``k`` of each query, scores in float units."""
        coll = self.collection(scale, max_mass_loss)
        t = coll.query_scale if toks_scale is None else float(toks_scale)
        quantised = self._quantise(queries, t, coll.max_mass_loss)
        res = coll.searcher().search(quantised, k, algorithm=algorithm, threads=threads)
        if progress is not None:
            progress(len(queries))
        rows = self.index.forward().rows(res.docnos) if len(res.docnos) else np.zeros(0, np.int64)
        order = np.lexsort((res.ranks, res.qpos))  # threads may finish out of order
        return Hits(
            res.qpos[order].astype(np.int64),
            rows[order].astype(np.int64),
            res.scores[order].astype(np.float64) / (coll.doc_scale * t),
        )
