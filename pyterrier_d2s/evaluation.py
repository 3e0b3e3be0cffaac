"""In-memory evaluation of a head on paired vectors: exact sparse and dense top-k, run frames, and
:func:`evaluate_head` (the paper's numbers for one head). The measures themselves are in
:mod:`pyterrier_d2s.measures`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .measures import DEFAULT_MEASURES, exact_at_k, flops, mean_nnz, retrieval_metrics, semantic_at_k

__all__ = [
    "dense_metrics",
    "dense_top_k",
    "evaluate_head",
    "image_own_ids",
    "run_frame",
    "sparse_top_k",
]


def _top_k_rows(scores: np.ndarray, k: int, drop_nonpositive: bool) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, scores.shape[1])
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < scores.shape[1]
        else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    )
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    val = np.take_along_axis(part_scores, order, axis=1)
    if drop_nonpositive:
        idx = np.where(val > 0, idx, -1)
    return idx, val


def sparse_top_k(
    queries: sp.csr_matrix, docs: sp.csr_matrix, k: int = 10, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of float sparse dot products. Returns (doc rows, scores), both (n_q, k); row -1 = none.

    Documents with score 0 share no term with the query and are not retrieved (as in an inverted index).
    """
    docs_t = docs.T.tocsr().astype(np.float32)
    return _batched_top_k(
        queries.shape[0],
        lambda lo, hi: (queries[lo:hi].astype(np.float32) @ docs_t).toarray(),
        k,
        batch_size,
        drop_nonpositive=True,
    )


def dense_top_k(
    queries: np.ndarray, docs: np.ndarray, k: int = 10, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of dense dot products (cosine for L2-normalised vectors)."""
    docs_t = docs.astype(np.float32).T
    return _batched_top_k(
        len(queries),
        lambda lo, hi: queries[lo:hi].astype(np.float32) @ docs_t,
        k,
        batch_size,
        drop_nonpositive=False,
    )


def _batched_top_k(
    n_queries: int, block_scores, k: int, batch_size: int, drop_nonpositive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``block_scores(lo, hi)`` (a dense (hi - lo) x n_docs score block), batch by batch."""
    out_idx, out_val = [], []
    for start in range(0, n_queries, batch_size):
        idx, val = _top_k_rows(block_scores(start, start + batch_size), k, drop_nonpositive=drop_nonpositive)
        out_idx.append(idx)
        out_val.append(val)
    if not out_idx:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.vstack(out_idx), np.vstack(out_val)


def run_frame(
    qids: Sequence[str], docnos: Sequence[str], idx: np.ndarray, scores: np.ndarray
) -> pd.DataFrame:
    """A PyTerrier result frame (qid, docno, score, rank) from top-k rows; row -1 entries are skipped."""
    n_q, k = idx.shape
    keep = idx >= 0
    q_rows = np.repeat(np.arange(n_q), k)[keep.ravel()]
    ranks = np.tile(np.arange(k), n_q)[keep.ravel()]
    docnos_arr = np.asarray(docnos, dtype=object)
    qids_arr = np.asarray(qids, dtype=object)
    return pd.DataFrame(
        {
            "qid": qids_arr[q_rows],
            "docno": docnos_arr[idx[keep]],
            "score": scores[keep].astype(np.float64),
            "rank": ranks,
        }
    )


def dense_metrics(data, measures=DEFAULT_MEASURES, k: int = 10) -> dict:
    """Caption→image metrics of the frozen dense model itself (exact dot products) on ``data``."""
    idx, val = dense_top_k(data.caption_vectors, data.image_vectors, k=k)
    run = run_frame(data.caption_ids, data.image_ids, idx, val)
    return retrieval_metrics(run, data.qrels(), measures)


def image_own_ids(head, data, all_captions: dict[str, list[str]] | None = None) -> list[np.ndarray]:
    """Per image of ``data``: the token ids of all its captions (``all_captions[image_id]`` when given, e.g.
    COCO's five; else the captions ``data`` pairs with it), for Exact@k of an image's own terms."""
    texts: list[list[str]] = [[] for _ in data.image_ids]
    for text, row in zip(data.caption_texts, data.caption_image, strict=True):
        texts[int(row)].append(text)
    if all_captions:
        texts = [all_captions.get(i, t) or t for i, t in zip(data.image_ids, texts, strict=True)]
    ids = head.vocab.token_ids([" ".join(t) for t in texts])
    return ids


def evaluate_head(
    head,
    data,
    expansion: bool | None = None,
    k: int = 10,
    semantic_embeddings: np.ndarray | None = None,
    measures=DEFAULT_MEASURES,
    all_captions: dict[str, list[str]] | None = None,
) -> dict:
    """The paper's numbers for a head on ``data`` (caption→image, exact sparse scoring).

    Returns R@1/R@5/R@10/RR@10 (as ``'R@1'``...), ``flops`` (Eq. 1), ``exact20`` / ``semantic20`` (Eq. 2-3,
    k = 20, on the fully expanded captions), ``q_nnz`` / ``d_nnz``. ``expansion=None`` expands the queries
    unless the head was trained with ``exp="0"``. ``image_exact20`` is Exact@20 of each *image*'s terms
    against the tokens of all its captions (``all_captions``: image_id -> texts, e.g. COCO's five).
    """
    from .head import load_word_embeddings

    if expansion is None:
        expansion = head.config.exp != "0"
    own = head.vocab.token_ids(data.caption_texts)
    q_full = head.encode(data.caption_vectors)
    q = q_full if expansion else head.encode(data.caption_vectors, own_token_ids=own)
    d = head.encode(data.image_vectors)
    idx, val = sparse_top_k(q, d, k=k)
    run = run_frame(data.caption_ids, data.image_ids, idx, val)
    qrels = data.qrels()
    if semantic_embeddings is None:
        # static term embeddings: the offline bert-base-uncased-vocabulary word embeddings
        semantic_embeddings = load_word_embeddings().numpy()
    if len(semantic_embeddings) != len(head.vocab):
        raise ValueError(
            f"semantic_embeddings has {len(semantic_embeddings)} rows for a {len(head.vocab)}-token vocabulary"
        )
    return {
        **retrieval_metrics(run, qrels, measures),
        "flops": flops(q, d),
        "exact20": exact_at_k(q_full, own, 20),
        "semantic20": semantic_at_k(q_full, own, semantic_embeddings, 20),
        "image_exact20": exact_at_k(d, image_own_ids(head, data, all_captions), 20),
        "q_nnz": mean_nnz(q),
        "d_nnz": mean_nnz(d),
    }
