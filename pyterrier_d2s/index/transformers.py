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

if TYPE_CHECKING:
    from .core import D2SIndex

logger = logging.getLogger(__name__)

_RESULT_COLUMNS = ["docno", "score", "rank"]
_POS = "_d2s_qpos"


def _empty_result(inp: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in inp.columns if c not in _RESULT_COLUMNS] + _RESULT_COLUMNS
    out = pd.DataFrame({c: pd.Series(dtype=inp[c].dtype if c in inp.columns else object) for c in cols})
    return out.astype({"docno": object, "score": np.float64, "rank": np.int64})


def _assemble(inp: pd.DataFrame, qpos: np.ndarray, docnos: np.ndarray, scores: np.ndarray, ranks: np.ndarray) -> pd.DataFrame:
    """Result frame: the query columns of row ``qpos`` of ``inp`` + docno/score/rank."""
    if len(qpos) == 0:
        return _empty_result(inp)
    out = inp.iloc[qpos].drop(columns=[c for c in _RESULT_COLUMNS if c in inp.columns]).reset_index(drop=True)
    out["docno"] = docnos
    out["score"] = scores.astype(np.float64)
    out["rank"] = ranks.astype(np.int64)
    return out


def _query_outputs(input_columns: list[str]) -> list[str]:
    pta.validate.query_frame(input_columns, extra_columns=["query_toks"])
    return [c for c in input_columns if c not in _RESULT_COLUMNS] + _RESULT_COLUMNS


class D2SPisaRetriever(pt.Transformer):
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
            return D2SPisaRetriever(self.index, k, self.algorithm, self.threads, self.toks_scale, self.verbose)
        return None

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        return _query_outputs(input_columns)

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
            quantised.append(q)
        lost = (total_mass - kept_mass) / total_mass if total_mass > 0 else 0.0
        if lost >= self.index.meta["max_mass_loss"]:
            logger.warning(
                "query scale %g loses %.3f%% of this batch's query weight mass (limit %.3f%%); "
                "pass toks_scale=index.choose_query_scale(sample) to the retriever",
                t, 100 * lost, 100 * self.index.meta["max_mass_loss"],
            )
        frame = pd.DataFrame({"qid": inp["qid"].to_numpy(), "query_toks": quantised, _POS: np.arange(len(inp))})
        res = self._pisa.transform(frame)
        return _assemble(
            inp,
            res[_POS].to_numpy(),
            res["docno"].to_numpy(dtype=object),
            res["score"].to_numpy(dtype=np.float64) / (self.index.doc_scale * t),
            res["rank"].to_numpy(),
        )


class D2SExactRetriever(pt.Transformer):
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

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        return _query_outputs(input_columns)

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
            inp, np.concatenate(qpos), fwd.docnos[rows_].astype(object), np.concatenate(scores), np.concatenate(ranks)
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
        rows = fwd.rows(inp["docno"].astype(str).tolist())
        qcodes, uniq = pd.factorize(inp["qid"], sort=False)
        first = np.full(len(uniq), -1)
        first[qcodes[::-1]] = np.arange(len(inp))[::-1]  # first row of each qid
        q = fwd.query_matrix([inp["query_toks"].iat[i] for i in first])
        # row-wise dot products, vectorised: (Q[qid of row] ⊙ D[row]).sum()
        scores = np.asarray(q[qcodes].multiply(fwd.matrix[rows]).sum(axis=1), dtype=np.float64).ravel()
        # qid groups in first-appearance order, score descending; lexsort is stable, so ties keep input order
        order = np.lexsort((-scores, qcodes))
        out = inp.iloc[order].drop(columns=[c for c in ("score", "rank") if c in inp.columns]).reset_index(drop=True)
        out["score"] = scores[order]
        sorted_codes = qcodes[order]
        group_start = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
        starts = np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
        out["rank"] = (np.arange(len(order)) - starts).astype(np.int64)
        return out[out_cols]
