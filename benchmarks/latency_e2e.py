"""One query at a time, end to end *with* encoding: a query vector in, a ranked result frame out.

Used by ``benchmarks/latency.py`` (rows with ``e2e_encode_ms_per_query`` / ``e2e_encode_p99_ms``).

Why a head-built collection. The synthetic collections of ``pyterrier_d2s.data.synthetic_collections`` are
sparse vectors: they have no dense vector to encode, so they cannot time the step that dominates one query at
a time (reading the 30,522 x 384 vocabulary layer). Here the index's documents and the queries are produced by
the *same* head, of the real size, from random dense vectors:

- the head: ``D2SHead`` with a 256-d input (BLIP's ITC vectors, as in the paper's Table 6), ω = 384, and its
  vocabulary layer W2 the real 30,522 x 384 all-MiniLM-L6-v2 word embeddings (the package's default
  initialisation, offline); W1 random;
- the bias: per term, so that the head's outputs have the synthetic collection's sparsity at the target FLOPs
  (the same Zipf popularity profile, terms shuffled): term j is active with probability ``p_j`` when
  ``b_j = -(μ_j + σ_j Φ⁻¹(1 - p_j))``, with μ_j, σ_j the mean and spread of ``h·w_j`` over a sample of hidden
  vectors (``h·w_j`` is a sum of 384 terms: close to normal); the FLOPs reached are measured and reported;
- documents: the head's encodings of random "image" vectors; queries: of independent random "caption"
  vectors; the unexpanded query is the caption text made of 8-12 whole-word terms of the expanded query (so
  the query encoder's real path, tokenizer included, finds them as the caption's own tokens);
- the dense baseline (pyterrier-dr ``FlexIndex``, exact ``np_retriever`` and faiss HNSW) indexes the same
  random "image" vectors and is queried with the same "caption" vectors.

Random dense vectors make HNSW's graph search no easier than real data (no cluster structure), and its recall
is reported against the exact dense ranking. Every system gets the same one-row frames (``qid``, ``query``,
``query_vec``) and is timed round-robin, query by query, on one thread, so that the machine's noise hits all
of them alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.special import ndtri

from pyterrier_d2s import head as head_module
from pyterrier_d2s.data.synthetic_collections import ZIPF_EXPONENT, inclusion_probs, nnz_for_flops
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.measures import flops_from_counts
from pyterrier_d2s.model import D2S

logger = logging.getLogger("latency.e2e")

DENSE_DIM = 256


@dataclass
class HeadCollection:
    """The head, its index of documents, the dense FlexIndex and the query frame."""

    model: D2S
    index: D2SIndex
    flex: object
    topics: pd.DataFrame
    flops: float
    flops_target: float


def calibrated_head(flops_target: float, seed: int, n_sample: int = 2000) -> D2SHead:
    """A real-size head whose outputs on random dense vectors have the synthetic sparsity at ``flops_target``."""
    torch.manual_seed(seed)
    head = D2SHead(D2SHeadConfig(input_dim=DENSE_DIM, hidden_dim=384)).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        hidden = head.norm(head.proj(torch.from_numpy(_dense(rng, n_sample))))
        u = torch.nn.functional.linear(hidden, head.vocab_proj.weight).numpy().astype(np.float64)
    mu, sd = u.mean(axis=0), u.std(axis=0) + 1e-6
    allowed = np.flatnonzero(~head.vocab.special_mask)
    zipf = 1.0 / np.arange(1, len(allowed) + 1) ** ZIPF_EXPONENT
    zipf /= zipf.sum()
    p = np.zeros(head.config.vocab_size)
    p[rng.permutation(allowed)] = np.clip(
        inclusion_probs(nnz_for_flops(flops_target, zipf), zipf), 1e-7, 0.999
    )
    with torch.no_grad():
        head.vocab_proj.bias.copy_(torch.from_numpy(-(mu + sd * ndtri(1 - p))).float())
    return head


def _dense(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DENSE_DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _captions(model: D2S, expanded: sp.csr_matrix, rng: np.random.Generator) -> list[str]:
    """Per query, a text of 8-12 whole-word terms of its expanded vector (its "own" tokens)."""
    tokens = model.vocab.tokens
    texts = []
    for i in range(expanded.shape[0]):
        row = expanded.indices[expanded.indptr[i] : expanded.indptr[i + 1]]
        words = [tokens[j] for j in row if tokens[j].isalpha() and tokens[j].isascii()]
        take = (
            rng.choice(len(words), min(len(words), int(rng.integers(8, 13))), replace=False) if words else []
        )
        texts.append(" ".join(words[j] for j in take))
    return texts


def build(flops_target: float, n_docs: int, n_queries: int, workdir: Path, seed: int, reuse: bool):
    """The head-built collection (indexes cached in ``workdir`` with ``reuse``)."""
    from pyterrier_d2s.experiment import dense_flex_index

    head = calibrated_head(flops_target, seed)
    model = D2S(head)
    rng = np.random.default_rng(seed + 1)
    doc_vecs, query_vecs = _dense(rng, n_docs), _dense(rng, n_queries)
    docnos = [f"d{i}" for i in range(n_docs)]
    path = workdir / f"head-flops{flops_target:.0f}-{n_docs}.d2s"
    index = D2SIndex(path, verbose=False)
    t0 = time.perf_counter()
    if not (reuse and index.built() and len(index) == n_docs):
        docs = head.encode(doc_vecs, screen=False)
        index = D2SIndex(path, verbose=False).index_matrix(docnos, docs, head.vocab.tokens)
    flex_path = workdir / f"head-dense-{n_docs}.flex"
    if not (reuse and (flex_path / "pt_meta.json").exists()):
        corpus = ({"docno": d, "doc_vec": v} for d, v in zip(docnos, doc_vecs, strict=True))
        dense_flex_index(flex_path, corpus)
    from pyterrier_dr import FlexIndex

    flex = FlexIndex(str(flex_path), verbose=False)
    logger.info("head collection FLOPs~%g built in %.0f s", flops_target, time.perf_counter() - t0)
    expanded = head.encode(query_vecs, screen=False)
    fwd = index.forward()
    logger.info("head collection: %.1f terms per document", fwd.matrix.nnz / n_docs)
    topics = pd.DataFrame(
        {
            "qid": [f"q{i}" for i in range(n_queries)],
            "query": _captions(model, expanded, rng),
            "query_vec": list(query_vecs),
        }
    )
    return HeadCollection(model, index, flex, topics, _flops(expanded, fwd, head), flops_target)


def _flops(expanded: sp.csr_matrix, fwd, head: D2SHead) -> float:
    """Eq. 1 of the expanded queries against the index's documents."""
    vocab_id = {t: i for i, t in enumerate(head.vocab.tokens)}
    d_counts = np.zeros(head.config.vocab_size)
    for col, term in enumerate(fwd.terms):
        d_counts[vocab_id[term]] = fwd.doc_freq[col]
    q_counts = np.bincount(expanded.indices, minlength=head.config.vocab_size)
    return flops_from_counts(q_counts, d_counts, expanded.shape[0], fwd.matrix.shape[0])


def systems(hc: HeadCollection, k: int) -> list[tuple[str, bool, object]]:
    """(setting, expanded, pipeline from a ``qid, query, query_vec`` frame to a result frame) at ``k``."""
    model, index, flex = hc.model, hc.index, hc.flex
    expanded = model.query_encoder(expansion=True) >> index.retriever(num_results=k)
    restricted = model.query_encoder(expansion=True, index=index) >> index.retriever(num_results=k)
    # compiled (PyTerrier's .compile()): encoder >> retriever (>> re-scorer) become one stage and
    # "% k" the re-scorer's own cut-off
    rescored = (
        (model.query_encoder(expansion=False) >> index.retriever(num_results=100) >> model.rescorer(index))
        % k
    ).compile()
    return [
        ("d2s expanded, float32 encoding (before)", True, _FullProjection(expanded)),
        ("d2s expanded, int8-screened encoding, two stages", True, expanded),
        ("d2s expanded, int8-screened encoding, compiled", True, expanded.compile()),
        ("d2s expanded, int8-screened, index columns, compiled", True, restricted.compile()),
        ("d2s no expansion >> rescore expanded (100 candidates)", False, rescored),
        ("dense exact (pyterrier-dr FlexIndex np_retriever)", None, flex.np_retriever(num_results=k)),
        (
            "dense HNSW (pyterrier-dr FlexIndex faiss, 32 neighbours, ef_search 16)",
            None,
            flex.faiss_hnsw_retriever(num_results=k),
        ),
    ]


class _FullProjection:
    """A pipeline run with the int8 screen switched off: the float32 projection of the whole layer."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        saved, head_module.SCREEN_MAX_ROWS = head_module.SCREEN_MAX_ROWS, 0
        try:
            return self.pipeline(frame)
        finally:
            head_module.SCREEN_MAX_ROWS = saved


def _top(frame: pd.DataFrame, k: int) -> dict[str, list[str]]:
    """The docnos of each query of a result frame, best first."""
    out: dict[str, list[str]] = {}
    for qid, docno in zip(frame["qid"], frame["docno"], strict=True):
        out.setdefault(qid, []).append(docno)
    return {q: d[:k] for q, d in out.items()}


def measure_e2e(hc: HeadCollection, k: int, budget_s: float, emit) -> None:
    """Time every system one query per call, round-robin, on one thread; emit a row per system."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    frames = [hc.topics.iloc[i : i + 1].reset_index(drop=True) for i in range(len(hc.topics))]
    runs = systems(hc, k)
    truth_sparse = hc.index.retriever(num_results=k, engine="exact")(
        hc.model.query_encoder(expansion=True)(hc.topics)
    )
    with threadpool_limits(1):
        truth_dense = hc.flex.np_retriever(num_results=k)(hc.topics)
        for _, _, pipe in runs:  # warm-up: loads, compiles, builds (HNSW, int8 screens), untimed
            for f in frames[:5]:
                pipe(f)
        times, results = _round_robin(runs, frames, budget_s * len(runs))
        batch_ms = []
        for _, _, pipe in runs:
            t0 = time.perf_counter()
            pipe(hc.topics)
            batch_ms.append(1000 * (time.perf_counter() - t0) / len(hc.topics))
    want_sparse, want_dense = _top(truth_sparse, k), _top(truth_dense, k)
    hnsw = float(np.mean(times[-1]))
    qids = hc.topics["qid"].tolist()
    for (name, expanded, _), t, got, b_ms in zip(runs, times, results, batch_ms, strict=True):
        want = want_dense if expanded is None else want_sparse
        recall = _recall(got, [want.get(q, []) for q in qids], k)
        emit(_row(hc, k, name, expanded, np.array(t), recall, b_ms, hnsw))


def _round_robin(runs, frames, budget_s: float) -> tuple[list[list[float]], list[list[list[str]]]]:
    times: list[list[float]] = [[] for _ in runs]
    results: list[list[list[str]]] = [[] for _ in runs]
    started = time.perf_counter()
    for f in frames:
        for n, (_, _, pipe) in enumerate(runs):
            t0 = time.perf_counter()
            res = pipe(f)
            times[n].append(1000 * (time.perf_counter() - t0))
            results[n].append(res["docno"].tolist())
        if time.perf_counter() - started > budget_s:
            break
    return times, results


def _recall(got: list[list[str]], want: list[list[str]], k: int) -> float:
    vals = [len(set(g[:k]) & set(w[:k])) / len(w[:k]) for g, w in zip(got, want, strict=False) if w]
    return float(np.mean(vals)) if vals else float("nan")


def _row(hc, k, name, expanded, t, recall, batch_ms, hnsw_ms) -> dict:
    mean = float(t.mean())
    return {
        "engine": "e2e+encode",
        "setting": name,
        "flops": round(hc.flops, 2),
        "collection": f"{len(hc.index)} docs (head-built), FLOPs~{hc.flops_target:g}",
        "k": k,
        "expanded": bool(expanded),
        "ms_per_query": round(mean, 4),
        "p50_ms": round(float(np.percentile(t, 50)), 4),
        "p99_ms": round(float(np.percentile(t, 99)), 4),
        "qps": round(1000.0 / mean, 1),
        "recall": round(recall, 4),
        "n_queries": len(t),
        "build_s": None,
        "index_mb": None,
        "exact_engine": False,
        "e2e_encode_ms_per_query": round(mean, 4),
        "e2e_encode_p99_ms": round(float(np.percentile(t, 99)), 4),
        "ratio_to_hnsw": round(mean / hnsw_ms, 3),
        "e2e_encode_batch_ms_per_query": round(batch_ms, 4),
    }
