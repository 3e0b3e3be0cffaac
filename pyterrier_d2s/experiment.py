"""Side-by-side comparison of dense and D2S systems, as in the paper's tables.

``compare()`` runs each system once over the topics (timing it), evaluates the runs with ``pt.Experiment``
(R@1, R@5, RR@10 by default) and adds the measures the paper reports next to them: FLOPs of the queries that
hit the inverted index (Eq. 1), mean query non-zeros, ms/query, top-10 overlap with a reference run
(Fig. 2b) and the per-query Pearson ρ of each measure with the reference (Table 5).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyterrier as pt

from .measures import DEFAULT_MEASURES, flops_from_counts, overlap_at_k, per_query_pearson

__all__ = [
    "System",
    "compare",
    "dense_flex_index",
    "query_flops",
    "timed_run",
]


@dataclass
class System:
    """A named pipeline; ``query_encoder`` (optional) produces the ``query_toks`` that reach the index,
    from which FLOPs and query non-zeros are computed; ``index`` (optional) is the index those queries run
    against when it is not the one given to :func:`compare` (a first stage from another model)."""

    name: str
    pipeline: pt.Transformer
    query_encoder: pt.Transformer | None = None
    index: Any = None


def dense_flex_index(path: str | os.PathLike, corpus: Any, overwrite: bool = True):
    """A pyterrier-dr FlexIndex over ``docno`` + ``doc_vec`` dicts (the dense baseline's index)."""
    from pyterrier_dr import FlexIndex

    index = FlexIndex(str(path), verbose=False)
    index.indexer(mode="overwrite" if overwrite else "create").index(corpus)
    return index


def timed_run(pipeline: pt.Transformer, topics: pd.DataFrame, warmup: int = 8) -> tuple[pd.DataFrame, float]:
    """(results, mean ms per query) of one batch call of ``pipeline`` on ``topics``.

    The first ``warmup`` topics run once untimed before: loading a tokenizer, opening an index or a first
    PISA query would otherwise be charged to the per-query time.
    """
    if warmup and len(topics) > warmup:
        pipeline(topics.iloc[:warmup])
    started = time.perf_counter()
    results = pipeline(topics)
    elapsed = time.perf_counter() - started
    return results, 1000.0 * elapsed / max(1, len(topics))


def query_flops(query_toks: Sequence[Mapping[str, float]], index) -> float:
    """Eq. 1 for these queries against the documents of a D2SIndex: Σ_k n_q(k)·n_d(k) / (|Q|·|D|)."""
    fwd = index.forward()
    term_col = fwd.term_index
    q_counts = np.zeros(len(fwd.terms), dtype=np.float64)
    for toks in query_toks:
        for t, w in toks.items():
            if w > 0 and t in term_col:
                q_counts[term_col[t]] += 1
    return flops_from_counts(q_counts, fwd.doc_freq, len(query_toks), fwd.matrix.shape[0])


def compare(
    systems: Sequence[System],
    topics: pd.DataFrame,
    qrels: pd.DataFrame,
    index=None,
    reference: str | None = None,
    measures=DEFAULT_MEASURES,
    overlap_k: int = 10,
) -> pd.DataFrame:
    """Run, time and evaluate every system; one row per system.

    Columns: ``name``, the measures (ir_measures names, through ``pt.Experiment``), ``flops``, ``q_nnz``,
    ``d_nnz`` (mean non-zeros of queries / indexed documents), ``ms_per_query``, ``overlap@10`` and
    ``rho-<measure>`` against ``reference`` (a system name).
    """
    runs, rows = {}, []
    for system in systems:
        results, ms = timed_run(system.pipeline, topics)
        runs[system.name] = results
        system_index = system.index if system.index is not None else index
        rows.append(
            {"name": system.name, "ms_per_query": ms, **_sparsity_columns(system, topics, system_index)}
        )
    table = pt.Experiment(
        list(runs.values()), topics, qrels, eval_metrics=list(measures), names=list(runs), verbose=False
    )
    out = pd.DataFrame(rows).merge(table, on="name", how="left")
    if reference is not None and reference in runs:
        _add_reference_columns(out, runs, runs[reference], qrels, measures, overlap_k)
    cols = ["name", *[str(m) for m in measures], "flops", "q_nnz", "d_nnz", "ms_per_query"]
    cols += [c for c in out.columns if c not in cols]
    return out[[c for c in cols if c in out.columns]]


def _sparsity_columns(system: System, topics: pd.DataFrame, index) -> dict[str, float]:
    """``flops``, ``q_nnz`` and ``d_nnz`` of a system whose queries reach ``index`` (none otherwise)."""
    if system.query_encoder is None or index is None:
        return {}
    toks = list(system.query_encoder(topics)["query_toks"])
    docs = index.forward().matrix
    return {
        "flops": query_flops(toks, index),
        "q_nnz": float(np.mean([sum(1 for w in t.values() if w > 0) for t in toks])) if toks else 0.0,
        "d_nnz": float(docs.nnz) / max(1, docs.shape[0]),
    }


def _add_reference_columns(
    table: pd.DataFrame,
    runs: Mapping[str, pd.DataFrame],
    reference: pd.DataFrame,
    qrels: pd.DataFrame,
    measures,
    overlap_k: int,
) -> None:
    """Add ``overlap@k`` and ``rho-<measure>`` of every run against the ``reference`` run to ``table``."""
    table[f"overlap@{overlap_k}"] = [
        overlap_at_k(runs[n], reference, overlap_k).mean() for n in table["name"]
    ]
    for n_i, name in enumerate(table["name"]):
        for m, rho in per_query_pearson(runs[name], reference, qrels, measures).items():
            table.loc[n_i, f"rho-{m}"] = rho
