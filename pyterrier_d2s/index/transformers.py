"""Retrieval and re-scoring transformers over a :class:`~pyterrier_d2s.index.D2SIndex`."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
from tqdm.auto import tqdm

from ._store import warn_unindexable_query_term

if TYPE_CHECKING:
    from .core import D2SIndex

logger = logging.getLogger(__name__)

_RESULT_COLUMNS = ["docno", "score", "rank"]
_POS = "_d2s_qpos"


def _empty_result(inp: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in inp.columns if c not in _RESULT_COLUMNS] + _RESULT_COLUMNS
    out = pd.DataFrame({c: pd.Series(dtype=inp[c].dtype if c in inp.columns else object) for c in cols})
    return out.astype({"docno": object, "score": np.float64, "rank": np.int64})


def _assemble(
    inp: pd.DataFrame, qpos: np.ndarray, docnos: np.ndarray, scores: np.ndarray, ranks: np.ndarray
) -> pd.DataFrame:
    """Result frame: the query columns of row ``qpos`` of ``inp`` + docno/score/rank."""
    if len(qpos) == 0:
        return _empty_result(inp)
    # one DataFrame construction from numpy columns: iloc/drop/setitem chains cost milliseconds per query
    cols = {c: inp[c].to_numpy()[qpos] for c in inp.columns if c not in _RESULT_COLUMNS}
    cols["docno"] = docnos
    cols["score"] = scores.astype(np.float64)
    cols["rank"] = ranks.astype(np.int64)
    return pd.DataFrame(cols)


def _query_outputs(input_columns: list[str]) -> list[str]:
    pta.validate.query_frame(input_columns, extra_columns=["query_toks"])
    return [c for c in input_columns if c not in _RESULT_COLUMNS] + _RESULT_COLUMNS


class _QueryToksRetriever(pt.Transformer):
    """What the retrievers share: ``qid`` + ``query_toks`` in, a result frame out (for ``pt.inspect``)."""

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        return _query_outputs(input_columns)


class D2SPisaRetriever(_QueryToksRetriever):
    """Top-k retrieval with PISA over the quantised impacts; scores are divided back into float units.

    Query terms the index does not know are dropped before PISA sees them (so PISA's lower-casing of query
    terms cannot make an unknown term match), and each remaining weight is sent as ``floor(t * w)`` copies.
    """

    def __init__(
        self,
        index: D2SIndex,
        num_results: int = 1000,
        algorithm: str = "maxscore",
        threads: int = 1,
        toks_scale: float | None = None,
        verbose: bool = False,
    ):
        from pyterrier_pisa import PisaQueryAlgorithm, PisaRetrieve

        self.index = index
        self.num_results = int(num_results)
        self.algorithm = PisaQueryAlgorithm(algorithm).value
        self.threads = int(threads)
        self.toks_scale = toks_scale
        self.verbose = verbose
        self._t = index.query_scale if toks_scale is None else float(toks_scale)
        self._warned = False
        self._pisa = PisaRetrieve(
            index.pisa_index(),
            scorer="quantized",
            num_results=self.num_results,
            threads=self.threads,
            query_algorithm=self.algorithm,
            # weights are quantised here, in float64, so PISA must not rescale them (numpy 2 would multiply a
            # float32 weight in float32 and floor differently)
            toks_scale=1.0,
            # BERT's vocabulary contains stopwords ("a", "the"): they are real terms here
            stops="none",
            verbose=verbose,
        )

    def __repr__(self) -> str:
        return (
            f"{self.index!r}.retriever(num_results={self.num_results}, engine='pisa', "
            f"algorithm={self.algorithm!r}, threads={self.threads})"
        )

    def fuse_rank_cutoff(self, k: int) -> D2SPisaRetriever | None:
        """``retriever % k`` retrieves only k results."""
        if k < self.num_results:
            return D2SPisaRetriever(
                self.index, k, self.algorithm, self.threads, self.toks_scale, self.verbose
            )
        return None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Retrieve ``num_results`` documents per query."""
        pta.validate.query_frame(inp, extra_columns=["query_toks"])
        if len(inp) == 0:
            return _empty_result(inp)
        known = self.index.forward().term_index
        t = self._t
        quantised = []
        kept_mass = total_mass = 0.0
        for toks in inp["query_toks"]:
            if not isinstance(toks, dict):
                raise TypeError(f"query_toks must be a dict of {{term: weight}}, got {type(toks).__name__}")
            q = {}
            for term, w in toks.items():
                w = float(w)
                if w > 0 and term in known:
                    total_mass += w
                    n = math.floor(w * t)
                    if n > 0:
                        q[term] = float(n)
                        kept_mass += n / t
                elif term not in known:
                    warn_unindexable_query_term(term)
            quantised.append(q)
        lost = (total_mass - kept_mass) / total_mass if total_mass > 0 else 0.0
        logger.debug("query scale %g loses %.4f%% of the batch's query weight mass", t, 100 * lost)
        if lost >= self.index.meta["max_mass_loss"] and not self._warned:
            self._warned = True  # once per retriever: single-query batches would flood the log
            logger.warning(
                "query scale %g loses %.3f%% of this batch's query weight mass (limit %.3f%%); "
                "pass toks_scale=index.choose_query_scale(sample) to the retriever",
                t,
                100 * lost,
                100 * self.index.meta["max_mass_loss"],
            )
        qpos, docnos, scores = self._search(inp, quantised)
        # ranks restart at 0 for each query; results come grouped by query, best first
        starts = np.r_[0, np.flatnonzero(np.diff(qpos)) + 1]
        ranks = np.arange(len(qpos)) - np.repeat(starts, np.diff(np.r_[starts, len(qpos)]))
        return _assemble(inp, qpos, docnos, scores / (self.index.doc_scale * t), ranks)

    def _search(self, inp: pd.DataFrame, quantised: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query position, docno, integer PISA score) of every hit, grouped by query in input order."""
        from pyterrier_pisa import _pisathon

        pisa = self._pisa
        pisa.reset_retrieval_context()
        try:
            # Direct call into pyterrier-pisa's extension (as PisaRetrieve.transform does): going through
            # PisaRetrieve's DataFrame plumbing costs ~1.3 ms per call, 10x PISA's own time on short queries.
            size = len(inp) * self.num_results
            qidx = np.empty(size, dtype=np.int32)
            docnos = np.empty(size, dtype=object)
            ranks = np.empty(size, dtype=np.int32)
            scores = np.empty(size, dtype=np.float32)
            items = [(i, q) for i, q in enumerate(quantised) if q]
            if self.verbose:
                items = tqdm(items, desc="D2S PISA", unit="query")
            n = _pisathon.retrieve(
                pisa._ctxt,
                self.algorithm,
                items,
                k=self.num_results,
                threads=self.threads,
                query_weighted=1,
                pretokenised=True,
                result_qidxs=qidx,
                result_docnos=docnos,
                result_ranks=ranks,
                result_scores=scores,
            )
            qidx, docnos, scores = qidx[:n], docnos[:n], scores[:n]
            if self.threads > 1:  # threads may finish out of order
                order = np.lexsort((ranks[:n], qidx))
                qidx, docnos, scores = qidx[order], docnos[order], scores[order]
            return qidx.astype(np.int64), docnos, scores.astype(np.float64)
        except (AttributeError, TypeError) as e:  # pragma: no cover - a pyterrier-pisa API change
            logger.debug("falling back to PisaRetrieve.transform: %s", e)
            frame = pd.DataFrame(
                {"qid": inp["qid"].to_numpy(), "query_toks": quantised, _POS: np.arange(len(inp))}
            )
            res = pisa.transform(frame)
            return (
                res[_POS].to_numpy(),
                res["docno"].to_numpy(dtype=object),
                res["score"].to_numpy(dtype=np.float64),
            )


class D2SExactRetriever(_QueryToksRetriever):
    """Exhaustive top-k by exact float dot products over the forward store (ground truth; no quantisation).

    Only documents sharing at least one positive-weight term with the query are returned. Ties are broken
    by index order, as PISA does.
    """

    batch_size = 256

    def __init__(self, index: D2SIndex, num_results: int = 1000, verbose: bool = False):
        self.index = index
        self.num_results = int(num_results)
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"{self.index!r}.retriever(num_results={self.num_results}, engine='exact')"

    def fuse_rank_cutoff(self, k: int) -> D2SExactRetriever | None:
        """``retriever % k`` retrieves only k results."""
        return D2SExactRetriever(self.index, k, self.verbose) if k < self.num_results else None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Retrieve ``num_results`` documents per query."""
        pta.validate.query_frame(inp, extra_columns=["query_toks"])
        if len(inp) == 0:
            return _empty_result(inp)
        fwd = self.index.forward()
        postings = fwd.transposed
        k = self.num_results
        qpos, rows, scores, ranks = [], [], [], []
        starts = range(0, len(inp), self.batch_size)
        for start in tqdm(starts, desc="D2S exact", unit="batch", disable=not self.verbose):
            q = fwd.query_matrix(list(inp["query_toks"].iloc[start : start + self.batch_size]))
            s = (q @ postings).tocsr()
            for i in range(s.shape[0]):
                lo, hi = s.indptr[i], s.indptr[i + 1]
                docs, vals = s.indices[lo:hi], s.data[lo:hi]
                keep = vals > 0
                docs, vals = docs[keep], vals[keep]
                if len(vals) > k:
                    # argpartition may cut through a tie at the k-th score: keep every tied doc, then trim
                    kth = np.partition(vals, len(vals) - k)[len(vals) - k]
                    sel = vals >= kth
                    docs, vals = docs[sel], vals[sel]
                order = np.lexsort((docs, -vals))[:k]
                qpos.append(np.full(len(order), start + i))
                rows.append(docs[order])
                scores.append(vals[order])
                ranks.append(np.arange(len(order)))
        if not qpos:
            return _empty_result(inp)
        rows_ = np.concatenate(rows)
        return _assemble(
            inp,
            np.concatenate(qpos),
            fwd.docnos[rows_].astype(object),
            np.concatenate(scores),
            np.concatenate(ranks),
        )


class D2SScorer(pt.Transformer):
    """Re-scores a result frame exactly: ``score`` = float ``query_toks · stored vector``, re-sorted per query.

    ``query_toks`` is taken per query (from the first row of each ``qid``), which lets an expansion re-scorer
    retrieve with the unexpanded query and swap in the expanded one before this stage.
    """

    def __init__(self, index: D2SIndex, verbose: bool = False):
        self.index = index
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"{self.index!r}.scorer()"

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "docno", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        pta.validate.result_frame(input_columns, extra_columns=["query_toks"])
        return [c for c in input_columns if c not in ("score", "rank")] + ["score", "rank"]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Re-score and re-rank ``inp``."""
        pta.validate.result_frame(inp, extra_columns=["query_toks"])
        out_cols = [c for c in inp.columns if c not in ("score", "rank")] + ["score", "rank"]
        if len(inp) == 0:
            out = inp.reindex(columns=out_cols)
            return out.astype({"score": np.float64, "rank": np.int64})
        fwd = self.index.forward()
        rows = fwd.rows([d if isinstance(d, str) else str(d) for d in inp["docno"].tolist()])
        qcodes, uniq = pd.factorize(inp["qid"], sort=False)
        # rows grouped by query; each group is scored against a dense copy of its query vector
        by_query = np.argsort(qcodes, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(qcodes, minlength=len(uniq)))]
        qdense = np.zeros(len(fwd.terms), dtype=np.float32)
        scores = np.empty(len(inp), dtype=np.float64)
        for g in range(len(uniq)):
            members = by_query[bounds[g] : bounds[g + 1]]
            q = fwd.query_matrix(
                [inp["query_toks"].iat[members[0]]]
            )  # query_toks of the first row of the qid
            qdense[q.indices] = q.data
            scores[members] = fwd.matrix[rows[members]] @ qdense
            qdense[q.indices] = 0.0
        # qid groups in first-appearance order, score descending; lexsort is stable, so ties keep input order
        order = np.lexsort((-scores, qcodes))
        sorted_codes = qcodes[order]
        group_start = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
        starts = np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
        cols = {c: inp[c].to_numpy()[order] for c in out_cols[:-2]}
        cols["score"] = scores[order]
        cols["rank"] = (np.arange(len(order)) - starts).astype(np.int64)
        return pd.DataFrame(cols)  # built in out_cols order
