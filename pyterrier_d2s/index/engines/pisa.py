"""``engine="pisa"``: PISA (through pyterrier-pisa) over the index's quantised impacts, with dynamic pruning.

Query weights are quantised here, in float64 (``floor(t * w)`` copies of each term, ``t`` the query scale),
and PISA's integer scores are divided by ``doc_scale * t`` back into float dot-product units; results are
within :meth:`D2SIndex.error_bound` of the exact scores, not exact. Terms the index does not know were
already dropped by the caller, so PISA's lower-casing of query terms cannot make an unknown term match.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from ._base import Engine, Hits, QueryBatch, require

if TYPE_CHECKING:  # pragma: no cover
    from ..core import D2SIndex

logger = logging.getLogger(__name__)

#: Default PISA query algorithm: the fastest measured on expanded D2S-like queries. ``benchmarks/retrieval_latency.py
#: --algorithms-only`` (123k docs, one thread, ms/query end to end at k=10; FLOPs ~11 | ~80):
#: maxscore 20.9 | 155, block_max_maxscore 30.0 | 292, ranked_or (exhaustive) 28.6 | 254, wand 72.5 | 706,
#: block_max_wand (pyterrier-pisa's default) 88.5 | 752. Queries with hundreds of terms defeat WAND's pivoting
#: and block-max skipping, while MaxScore cheaply sets aside the many low-impact terms.
DEFAULT_ALGORITHM = "maxscore"

_POS = "_d2s_qpos"


class PisaEngine(Engine):
    """PISA top-k retrieval over quantised impacts (approximately exact: see the quantisation error bound).

    Settings:
        algorithm: PISA query algorithm (``maxscore`` default; ``block_max_wand``, ``wand``,
            ``block_max_maxscore``, ``ranked_or``, ...).
        toks_scale: query scale ``t``; ``None`` uses the index's ``query_scale``.
    """

    name: ClassVar[str] = "pisa"
    exact: ClassVar[bool] = False
    settings: ClassVar[dict[str, Any]] = {"algorithm": DEFAULT_ALGORITHM, "toks_scale": None}

    def __init__(self, index: D2SIndex):
        super().__init__(index)
        self._pisa = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def check_available(cls) -> None:
        require("pyterrier_pisa", None, cls.name, "pip install pyterrier-pisa")

    @classmethod
    def validate_settings(cls, settings):
        out = super().validate_settings(settings)
        from pyterrier_pisa import PisaQueryAlgorithm

        out["algorithm"] = PisaQueryAlgorithm(out["algorithm"]).value
        return out

    def retrieve_context(self):
        """pyterrier-pisa's :class:`PisaRetrieve` holding the loaded index (created on first use)."""
        with self._lock:
            if self._pisa is None:
                from pyterrier_pisa import PisaRetrieve

                self._pisa = PisaRetrieve(
                    self.index.pisa_index(),
                    scorer="quantized",
                    num_results=10,
                    # weights are quantised here, in float64, so PISA must not rescale them (numpy 2 would
                    # multiply a float32 weight in float32 and floor differently)
                    toks_scale=1.0,
                    # BERT's vocabulary contains stopwords ("a", "the"): they are real terms here
                    stops="none",
                )
        return self._pisa

    def prepare(self) -> None:
        self.retrieve_context()

    def _quantise(self, queries: QueryBatch, t: float) -> list[dict[str, float]]:
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
        if lost >= self.index.meta["max_mass_loss"] and not self._warned:
            self._warned = True  # once per engine: single-query batches would flood the log
            logger.warning(
                "query scale %g loses %.3f%% of this batch's query weight mass (limit %.3f%%); "
                "pass toks_scale=index.choose_query_scale(sample) to the retriever",
                t,
                100 * lost,
                100 * self.index.meta["max_mass_loss"],
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
        progress: Callable[[int], Any] | None = None,
    ) -> Hits:
        """PISA's top ``k`` of each query, scores in float units."""
        from pyterrier_pisa import _pisathon

        t = self.index.query_scale if toks_scale is None else float(toks_scale)
        quantised = self._quantise(queries, t)
        pisa = self.retrieve_context()
        pisa.reset_retrieval_context()
        size = len(queries) * k
        try:
            # Direct call into pyterrier-pisa's extension (as PisaRetrieve.transform does): going through
            # PisaRetrieve's DataFrame plumbing costs ~1.3 ms per call, 10x PISA's own time on short queries.
            qidx = np.empty(size, dtype=np.int32)
            docnos = np.empty(size, dtype=object)
            ranks = np.empty(size, dtype=np.int32)
            scores = np.empty(size, dtype=np.float32)
            items = [(i, q) for i, q in enumerate(quantised) if q]
            n = _pisathon.retrieve(
                pisa._ctxt,
                algorithm,
                items,
                k=k,
                threads=threads,
                query_weighted=1,
                pretokenised=True,
                result_qidxs=qidx,
                result_docnos=docnos,
                result_ranks=ranks,
                result_scores=scores,
            )
            qidx, docnos, ranks, scores = qidx[:n], docnos[:n], ranks[:n], scores[:n]
        except (AttributeError, TypeError) as e:  # pragma: no cover - a pyterrier-pisa API change
            logger.debug("falling back to PisaRetrieve.transform: %s", e)
            from pyterrier_pisa import PisaRetrieve

            retr = PisaRetrieve(
                self.index.pisa_index(),
                scorer="quantized",
                num_results=k,
                threads=threads,
                query_algorithm=algorithm,
                toks_scale=1.0,
                stops="none",
            )
            frame = pd.DataFrame(
                {
                    "qid": [str(i) for i in range(len(queries))],
                    "query_toks": quantised,
                    _POS: np.arange(len(queries)),
                }
            )
            res = retr.transform(frame)
            qidx, docnos = res[_POS].to_numpy(), res["docno"].to_numpy(dtype=object)
            ranks, scores = res["rank"].to_numpy(), res["score"].to_numpy()
        if progress is not None:
            progress(len(queries))
        rows = self.index.forward().rows(docnos) if len(docnos) else np.zeros(0, np.int64)
        order = np.lexsort((ranks, qidx))  # threads may finish out of order
        return Hits(
            qidx[order].astype(np.int64),
            rows[order].astype(np.int64),
            scores[order].astype(np.float64) / (self.index.doc_scale * t),
        )
