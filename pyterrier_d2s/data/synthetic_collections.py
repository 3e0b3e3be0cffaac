"""Synthetic sparse collections with the sparsity of a trained D2S head, for the retrieval latency benchmarks.

A collection has ``n_docs`` documents and ``n_queries`` queries over ``N_TERMS`` terms whose popularity is
Zipf-like; every vector activates term k independently with probability ``p_k = min(1, c * pi_k)``, with the
per-vector non-zeros tuned so that FLOPs (mean number of co-activated terms per query/document pair,
``sum_k n_q(k) n_d(k) / (|Q| |D|)``) hits a target (about 11 and about 80 for the paper's Table 6). Weights
look like a ``log(1 + relu)`` head: ``log1p(Gamma(0.7, 2))`` clipped to [1e-4, 4]. Each query also has an
"unexpanded" version: a random 8-12 of its terms (standing for the caption's own tokens).

Term names are shuffled so that popularity is unrelated to lexicographic order. Only numpy and scipy are
needed (no index, no head), so the index tests and benchmarks can use it from below every other layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..measures import flops

__all__ = [
    "N_TERMS",
    "ZIPF_EXPONENT",
    "Collection",
    "inclusion_probs",
    "make_collection",
    "nnz_for_flops",
    "sample_matrix",
    "to_dicts",
    "unexpanded",
]

logger = logging.getLogger(__name__)

N_TERMS = 30_000
ZIPF_EXPONENT = 1.0


def inclusion_probs(nnz: float, zipf: np.ndarray) -> np.ndarray:
    """Per-term activation probabilities p_k = min(1, c * pi_k) with sum p_k = nnz (Poisson sampling)."""
    lo, hi = 0.0, 1e12
    for _ in range(200):
        c = (lo + hi) / 2
        if np.minimum(1.0, c * zipf).sum() < nnz:
            lo = c
        else:
            hi = c
    return np.minimum(1.0, hi * zipf)


def nnz_for_flops(flops: float, zipf: np.ndarray) -> float:
    """Vector non-zeros (same for queries and documents) giving an expected FLOPs of ``flops``."""
    lo, hi = 1.0, float(len(zipf))
    for _ in range(60):
        mid = (lo + hi) / 2
        p = inclusion_probs(mid, zipf)
        if float(p @ p) < flops:
            lo = mid
        else:
            hi = mid
    return hi


def sample_matrix(rng: np.random.Generator, rows: int, p: np.ndarray) -> sp.csr_matrix:
    """rows x terms matrix: term k active in each row independently with probability p_k; log(1+relu)-like weights."""
    counts = rng.binomial(rows, p)
    cols = [rng.choice(rows, size=int(n), replace=False) if n < rows else np.arange(rows) for n in counts]
    indptr = np.r_[0, np.cumsum(counts)]
    indices = np.concatenate(cols).astype(np.int32)
    data = np.log1p(rng.gamma(0.7, 2.0, size=len(indices))).clip(1e-4, 4.0).astype(np.float32)
    return sp.csc_matrix((data, indices, indptr), shape=(rows, len(p))).tocsr()


def to_dicts(m: sp.csr_matrix, terms: np.ndarray) -> list[dict[str, float]]:
    """One ``{term: weight}`` dict per row."""
    out = []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        out.append(dict(zip(terms[m.indices[lo:hi]].tolist(), m.data[lo:hi].tolist(), strict=True)))
    return out


def unexpanded(rng: np.random.Generator, queries: list[dict[str, float]]) -> list[dict[str, float]]:
    """A random 8-12 terms of each query (the caption's own tokens), with their weights."""
    out = []
    for q in queries:
        keys = list(q)
        m = min(len(keys), int(rng.integers(8, 13)))
        out.append({k: q[k] for k in rng.choice(keys, size=m, replace=False).tolist()})
    return out


@dataclass
class Collection:
    """A synthetic collection: documents (CSR), queries (CSR and dicts), unexpanded queries (dicts)."""

    flops_target: float
    docs: sp.csr_matrix
    docnos: np.ndarray
    terms: np.ndarray
    queries: sp.csr_matrix
    qids: list[str]
    expanded: list[dict[str, float]]
    short: list[dict[str, float]]
    nnz_per_vector: float
    flops: float


def make_collection(flops_target: float, n_docs: int, n_queries: int, seed: int = 0) -> Collection:
    """The collection for a FLOPs target (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, N_TERMS + 1) ** ZIPF_EXPONENT
    zipf /= zipf.sum()
    terms = np.array([f"t{i:05d}" for i in rng.permutation(N_TERMS)])
    nnz = nnz_for_flops(flops_target, zipf)
    p = inclusion_probs(nnz, zipf)
    docs = sample_matrix(rng, n_docs, p)
    qmat = sample_matrix(rng, n_queries, p)
    achieved = flops(qmat, docs)
    logger.info("FLOPs target %.0f: %.1f nnz/vector, achieved FLOPs %.2f", flops_target, nnz, achieved)
    expanded = to_dicts(qmat, terms)
    return Collection(
        flops_target=flops_target,
        docs=docs,
        docnos=np.array([f"d{i}" for i in range(n_docs)]),
        terms=terms,
        queries=qmat,
        qids=[f"q{i}" for i in range(n_queries)],
        expanded=expanded,
        short=unexpanded(rng, expanded),
        nnz_per_vector=nnz,
        flops=achieved,
    )
