"""The measures of the papers, in one place: FLOPs (Eq. 1), Exact@k (Eq. 2), Semantic@k (Eq. 3), agreement
with a reference run (overlap@k, per-query Pearson, Table 5) and the ir_measures adapter for R@k / RR@k.

Everything here works on CSR matrices of sparse vectors (rows = captions or images, columns = vocabulary),
per-term counts or PyTerrier result frames; it imports neither PyTerrier nor torch, so training's validation,
:mod:`~pyterrier_d2s.evaluation` and :mod:`~pyterrier_d2s.experiment` all use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import ir_measures
import numpy as np
import pandas as pd
import scipy.sparse as sp
from ir_measures import RR, R

__all__ = [
    "DEFAULT_MEASURES",
    "exact_at_k",
    "flops",
    "flops_from_counts",
    "ir_measures_qrels",
    "ir_measures_run",
    "mean_nnz",
    "overlap_at_k",
    "per_query_pearson",
    "retrieval_metrics",
    "semantic_at_k",
    "term_counts",
    "top_terms",
]

#: The retrieval measures every table of this package reports (caption -> image, one relevant image).
DEFAULT_MEASURES = (R @ 1, R @ 5, R @ 10, RR @ 10)


def ir_measures_run(run: pd.DataFrame) -> pd.DataFrame:
    """A PyTerrier result frame (qid, docno, score) in ir_measures' column names."""
    return run.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]]


def ir_measures_qrels(qrels: pd.DataFrame) -> pd.DataFrame:
    """PyTerrier qrels (qid, docno, label) in ir_measures' column names."""
    out = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    return out[["query_id", "doc_id", "relevance"]]


def term_counts(m: sp.csr_matrix) -> np.ndarray:
    """Number of rows with a positive weight on each column (a term's query or document frequency)."""
    return np.bincount(m.indices[m.data > 0], minlength=m.shape[1]).astype(np.float64)


def flops_from_counts(q_counts: np.ndarray, d_counts: np.ndarray, n_queries: int, n_docs: int) -> float:
    """Eq. 1 from per-term counts: ``Σ_k n_q(k)·n_d(k) / (|Q||D|)`` (0 for no queries or no documents)."""
    if n_queries == 0 or n_docs == 0:
        return 0.0
    q = np.asarray(q_counts, dtype=np.float64)
    d = np.asarray(d_counts, dtype=np.float64)
    return float(q @ d) / (n_queries * n_docs)


def flops(queries: sp.csr_matrix, docs: sp.csr_matrix) -> float:
    """Eq. 1: mean number of co-activated terms over all (query, document) pairs.

    ``1/(|Q||D|) Σ_q Σ_d |nz(s_q) ∩ nz(s_d)| = Σ_k n_q(k)·n_d(k) / (|Q||D|)``, exact from per-term counts.
    """
    return flops_from_counts(term_counts(queries), term_counts(docs), queries.shape[0], docs.shape[0])


def mean_nnz(m: sp.csr_matrix) -> float:
    """Mean number of non-zero terms per row."""
    return float((m.data > 0).sum()) / max(1, m.shape[0])


def top_terms(row_idx: np.ndarray, row_val: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` largest positive weights of one sparse row (ties by column)."""
    keep = row_val > 0
    row_idx, row_val = row_idx[keep], row_val[keep]
    if len(row_val) > k:
        # stable order: by weight, ties by token id, so the metric does not depend on storage order
        order = np.lexsort((row_idx, -row_val))[:k]
        row_idx = row_idx[order]
    return row_idx


def exact_at_k(weights: sp.csr_matrix, own_ids: Sequence[np.ndarray], k: int = 20) -> float:
    """Eq. 2, averaged over captions: ``|{t ∈ caption} ∩ top_k(s_C)| / k``."""
    if weights.shape[0] != len(own_ids):
        raise ValueError(f"{weights.shape[0]} sparse rows for {len(own_ids)} token lists")
    weights = weights.tocsr()
    total = 0.0
    for i, own in enumerate(own_ids):
        lo, hi = weights.indptr[i], weights.indptr[i + 1]
        top = top_terms(weights.indices[lo:hi], weights.data[lo:hi], k)
        total += len(np.intersect1d(top, own)) / k
    return total / max(1, len(own_ids))


def semantic_at_k(
    weights: sp.csr_matrix, own_ids: Sequence[np.ndarray], embeddings: np.ndarray, k: int = 20
) -> float:
    """Eq. 3, averaged over captions: ``1/k Σ_{t ∈ top_k(s_C)} max_{j ∈ caption} cos(e_t, e_j)``.

    ``embeddings`` are static term embeddings (|V| x e); the default elsewhere is the vocabulary embeddings.
    """
    if weights.shape[0] != len(own_ids):
        raise ValueError(f"{weights.shape[0]} sparse rows for {len(own_ids)} token lists")
    emb = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)
    weights = weights.tocsr()
    total = 0.0
    for i, own in enumerate(own_ids):
        if len(own) == 0:
            continue
        lo, hi = weights.indptr[i], weights.indptr[i + 1]
        top = top_terms(weights.indices[lo:hi], weights.data[lo:hi], k)
        if len(top) == 0:
            continue
        total += float((emb[top] @ emb[np.asarray(own)].T).max(axis=1).sum()) / k
    return total / max(1, len(own_ids))


def retrieval_metrics(run: pd.DataFrame, qrels: pd.DataFrame, measures=DEFAULT_MEASURES) -> dict:
    """Aggregate ir_measures values of a run, keyed by the measure objects' names (e.g. ``'R@1'``)."""
    run_m, qrels_m = ir_measures_run(run), ir_measures_qrels(qrels)
    # ir_measures scores queries of the qrels that retrieved nothing as 0 (checked in the tests)
    result = ir_measures.calc_aggregate(list(measures), qrels_m, run_m)
    return {str(m): float(result.get(m, 0.0)) for m in measures}


def overlap_at_k(run: pd.DataFrame, reference: pd.DataFrame, k: int = 10) -> pd.Series:
    """Per query: the fraction of the reference's top-k documents that are also in the run's top-k (Fig. 2b)."""

    def top(frame: pd.DataFrame) -> dict[str, set[str]]:
        frame = frame.sort_values(["qid", "score"], ascending=[True, False])
        return {q: set(g["docno"].head(k)) for q, g in frame.groupby("qid", sort=False)}

    a, b = top(run), top(reference)
    return pd.Series({q: len(a.get(q, set()) & docs) / k for q, docs in b.items()}, name=f"overlap@{k}")


def per_query_pearson(
    run: pd.DataFrame, reference: pd.DataFrame, qrels: pd.DataFrame, measures=DEFAULT_MEASURES
) -> dict[str, float]:
    """Pearson ρ over queries between a run's and the reference's per-query values of each measure (Table 5)."""
    qrels_m = ir_measures_qrels(qrels)

    def per_query(frame: pd.DataFrame) -> pd.DataFrame:
        run_m = ir_measures_run(frame)
        rows = [
            (m.query_id, str(m.measure), m.value)
            for m in ir_measures.iter_calc(list(measures), qrels_m, run_m)
        ]
        return pd.DataFrame(rows, columns=["qid", "measure", "value"]).pivot(
            index="qid", columns="measure", values="value"
        )

    a, b = per_query(run), per_query(reference)
    a, b = a.align(b, join="outer", fill_value=0.0)
    out = {}
    for m in measures:
        x, y = a[str(m)].to_numpy(), b[str(m)].to_numpy()
        out[str(m)] = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    return out
