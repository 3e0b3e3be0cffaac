"""Retrieval latency of the D2S index on synthetic collections with the sparsity of a trained D2S head.

Builds a 123k-document collection (``--small``: 12k) with ``pyterrier_d2s.data.synthetic_collections`` (FLOPs about 11 and
about 80; each query also has an "unexpanded" version). This script times the PISA engine (and scipy exact
scoring); ``benchmarks/latency.py`` compares every engine.

Latency is end to end through the D2S transformers, one query per call, on one thread: pandas framing,
query quantisation and PISA (or the exact scorer). Each setting is timed on the first queries until all are
done or ``--budget-s`` is spent. Recall@k is against exhaustive exact float scoring of the expanded query.

Usage::

    python benchmarks/retrieval_latency.py [--small] [--queries N] [--budget-s S] [--workdir DIR]

Prints a line per setting and, as the last line, a JSON list of result objects.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyterrier as pt

from pyterrier_d2s.data.synthetic_collections import make_collection
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.index.engines.pisa import DEFAULT_ALGORITHM

logger = logging.getLogger("retrieval_latency")


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def time_setting(run_one, qids: list[str], budget_s: float) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Call ``run_one(i)`` for queries in order until done or over budget; returns per-query ms and results."""
    times, results = [], {}
    run_one(0)  # warm-up: first PISA call loads the index
    started = time.perf_counter()
    for i, qid in enumerate(qids):
        t0 = time.perf_counter()
        res = run_one(i)
        times.append((time.perf_counter() - t0) * 1000)
        results[qid] = res["docno"].tolist()
        if time.perf_counter() - started > budget_s:
            break
    return np.array(times), results


def recall(results: dict[str, list[str]], truth: dict[str, list[str]], k: int) -> float:
    vals = [len(set(docs[:k]) & set(truth[q][:k])) / max(1, len(truth[q][:k])) for q, docs in results.items()]
    return float(np.mean(vals)) if vals else float("nan")


def run(
    flops_target: float,
    n_docs: int,
    n_queries: int,
    ks: list[int],
    budget_s: float,
    workdir: Path,
    seed: int,
    algorithms: list[str],
    algorithms_only: bool = False,
) -> list[dict]:
    coll = make_collection(flops_target, n_docs, n_queries, seed)
    docs, docnos, terms, nnz, flops = coll.docs, coll.docnos, coll.terms, coll.nnz_per_vector, coll.flops

    path = workdir / f"flops{flops_target:.0f}.d2s"
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    # PISA at build time, so that build_s covers the forward store and PISA as before it was built lazily
    index = D2SIndex(path, verbose=False).index_matrix(docnos, docs, terms, engines=("pisa",))
    build_s = time.perf_counter() - t0
    pisa = index.engine("pisa").collection()
    index_mb, pisa_mb = dir_mb(path), dir_mb(pisa.path)
    logger.info("built in %.1f s, %.0f MB (pisa %.0f MB), meta %s", build_s, index_mb, pisa_mb, index.meta)
    del docs

    qids, expanded, short = coll.qids, coll.expanded, coll.short
    exp_by_qid = dict(zip(qids, expanded, strict=True))
    frames_exp = pd.DataFrame({"qid": qids, "query_toks": expanded})
    frames_short = pd.DataFrame({"qid": qids, "query_toks": short})
    t_lost, s_lost = pisa.query_mass_loss(expanded), pisa.query_mass_loss(short)
    logger.info(
        "query mass lost at scale %g: expanded %.3f%%, unexpanded %.3f%%",
        pisa.query_scale,
        100 * t_lost,
        100 * s_lost,
    )

    kmax = max(ks)
    truth_res = index.retriever(num_results=kmax, engine="exact")(frames_exp)
    truth = {q: g["docno"].tolist() for q, g in truth_res.groupby("qid", sort=False)}
    # swap in the expanded query (what ExpansionRescorer does); a list comprehension, as Series.map(dict) rebuilds
    # a Series from the whole dict on every call
    swap = pt.apply.generic(lambda df: df.assign(query_toks=[exp_by_qid[q] for q in df["qid"]]))

    out = []
    for k in ks:
        settings = [
            ("pisa", alg, True, index.retriever(k, engine="pisa", algorithm=alg), frames_exp)
            for alg in algorithms
        ]
        if not algorithms_only:
            rescore = index.retriever(k, engine="pisa", algorithm=DEFAULT_ALGORITHM) >> swap >> index.scorer()
            settings += [
                (
                    "pisa",
                    DEFAULT_ALGORITHM,
                    False,
                    index.retriever(k, engine="pisa", algorithm=DEFAULT_ALGORITHM),
                    frames_short,
                ),
                (
                    "pisa>>scorer",
                    f"{DEFAULT_ALGORITHM} unexpanded >> rescore expanded",
                    False,
                    rescore,
                    frames_short,
                ),
                ("exact", "scipy csr", True, index.retriever(k, engine="exact"), frames_exp),
            ]
        for engine, setting, is_exp, transformer, frame in settings:
            times, results = time_setting(
                lambda i, t=transformer, f=frame: t(f.iloc[i : i + 1]), qids, budget_s
            )
            row = {
                "engine": engine,
                "setting": setting,
                "flops": round(flops, 2),
                "k": k,
                "expanded": is_exp,
                "ms_per_query": round(float(times.mean()), 3),
                "p50_ms": round(float(np.percentile(times, 50)), 3),
                "p99_ms": round(float(np.percentile(times, 99)), 3),
                "qps": round(1000.0 / float(times.mean()), 1),
                "recall": round(recall(results, truth, k), 4),
                "n_queries": len(times),
                "build_s": round(build_s, 2),
                "index_mb": round(index_mb, 1),
                "pisa_mb": round(pisa_mb, 1),
                "doc_scale": pisa.doc_scale,
                "query_scale": pisa.query_scale,
                "doc_mass_lost": round(pisa.info["doc_mass_lost"], 5),
                "query_mass_lost": round(t_lost if is_exp else s_lost, 5),
                "nnz_per_vector": round(nnz, 1),
            }
            logger.info(json.dumps(row))
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="12k docs, 50 queries, short budgets (< 1 min)")
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--flops", type=float, nargs="+", default=[11.0, 80.0])
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--budget-s", type=float, default=None, help="time budget per setting")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--algorithms",
        nargs="+",
        default=[DEFAULT_ALGORITHM, "block_max_wand"],
        help="PISA algorithms timed on expanded queries",
    )
    ap.add_argument(
        "--algorithms-only", action="store_true", help="only time PISA expanded (algorithm comparison)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    n_docs = args.docs or (12_300 if args.small else 123_000)
    n_queries = args.queries or (50 if args.small else 1000)
    budget = args.budget_s or (1.0 if args.small else 20.0)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="d2s_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for f in args.flops:
            rows.extend(
                run(
                    f,
                    n_docs,
                    n_queries,
                    args.ks,
                    budget,
                    workdir,
                    args.seed,
                    args.algorithms,
                    args.algorithms_only,
                )
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
