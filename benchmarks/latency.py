"""Latency, throughput, recall, build time and size of every retrieval engine of a D2S index.

Collections come from ``pyterrier_d2s.data.synthetic_collections`` (123k documents, 1000 queries, FLOPs about 11 and about 80,
the sparsity of trained heads as in the paper's Table 6; ``--small``: 5k documents, 40 queries, in under a
minute). Seismic is built above FLOPs 20 only with ``--seismic-all`` or when ``--reuse`` finds it built in
``--workdir`` (its build took 14 minutes at FLOPs 80 here); build times are those recorded when each engine's
files were built.

For every engine x setting x collection x k (10, 100, 1000):

- ``ms_per_query``, ``p50_ms``, ``p99_ms``, ``qps``: one query per call on one thread, at the engine level
  (``Engine.search`` on an already encoded query: term ids + float32 weights in, document rows + exact float
  scores out; PISA's time includes quantising the query and mapping its docnos back), over the queries in
  order until all are done or ``--budget-s`` is spent;
- ``e2e_ms_per_query``: the same through the PyTerrier transformer with a one-row DataFrame (query dict
  encoding, validation and result frame included; pandas alone costs a few hundred microseconds here);
- ``batch_qps_1t``/``batch_qps_2t``: throughput of a batch of queries on 1 and 2 threads (k = 10, 1000);
- ``e2e_encode_ms_per_query``, ``e2e_encode_p99_ms`` (rows with ``engine="e2e+encode"``, k = the smallest of
  ``--ks``): one query per call from a query *vector* to a ranked result frame, query encoding included, for
  expanded queries (float32 and int8-screened encoding), "no expansion >> expansion" and pyterrier-dr's
  FlexIndex (exact and HNSW) on the same dense vectors, timed round-robin on one thread over collections whose
  documents and queries a real-size head produced (``benchmarks/latency_e2e.py`` says why and how);
  ``ratio_to_hnsw`` and ``e2e_encode_batch_ms_per_query`` (one call over all queries) come with them;
- ``recall``: recall@k of the expanded query's exact top-k (scipy float32 dot products over the forward store);
- ``build_s``/``index_mb``: time to build the engine's own structures from the forward store (for PISA: its
  quantised collection, compressed; built on first use like the others) and the size of what the engine reads
  (its files plus the forward store, which every engine reads: PISA for its docnos and query terms).

Settings: PISA MaxScore (this package's PISA default) and block-max WAND (pyterrier-pisa's default) on expanded
queries, PISA MaxScore on unexpanded queries; scipy exact; taat (exact) with a few layouts; Seismic with the
automatic knobs and with pyseismic's defaults; "no expansion >> expansion" (taat on the unexpanded query,
re-scored with the expanded one) at a fixed depth; the adaptive retriever (certified, and calibrated to recall
0.99 on the first 100 queries). The paper's Table 6 figures are added as rows with ``engine="paper"``.

Usage::

    python benchmarks/latency.py [--small] [--json] [--out FILE] [--budget-s S] [--flops 11 80] [--ks 10 100 1000]
                                 [--workdir DIR [--reuse]] [--seismic-all]

Prints a line per measurement and, with ``--json``, a JSON list of all rows as the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import latency_e2e  # noqa: E402  (benchmarks/ is on sys.path when this file runs)
import numpy as np
import pandas as pd

from pyterrier_d2s.data.synthetic_collections import Collection, make_collection
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.index.engines import QueryBatch, get_engine
from pyterrier_d2s.index.engines._base import dir_size_mb, engine_info, sort_hits

logger = logging.getLogger("latency")

#: The paper's Table 6 (MSCOCO, 123k images, BLIP; PISA on one thread): ms/query at k=10.
PAPER = [
    ("PISA expanded", 11.5, True, 156.0),
    ("PISA expanded", 78.0, True, 300.0),  # reported as "> 300 ms"
    ("PISA unexpanded", 11.5, False, 2.2),
    ("PISA unexpanded >> rescore expanded", 11.5, False, 2.7),
    ("dense HNSW", None, False, 0.08),
]


def file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


class Bench:
    """One collection: index, truth, and the timing helpers."""

    def __init__(self, coll: Collection, workdir: Path, budget_s: float, ks: list[int], reuse: bool = False):
        self.coll = coll
        self.budget_s = budget_s
        self.ks = ks
        path = workdir / f"flops{coll.flops_target:.0f}-{len(coll.docnos)}.d2s"
        existing = D2SIndex(path, verbose=False)
        if reuse and existing.built() and len(existing) == len(coll.docnos):
            logger.info("reusing %s (and the engine files cached in it)", path)
            self.index = existing
        else:
            shutil.rmtree(path, ignore_errors=True)
            self.index = D2SIndex(path, verbose=False).index_matrix(coll.docnos, coll.docs, coll.terms)
        self.forward_mb = sum(file_mb(path / f) for f in ("forward.npz", "terms.txt", "docnos.txt"))
        fwd = self.index.forward()
        self.full = QueryBatch.from_toks(fwd, coll.expanded)
        self.short = QueryBatch.from_toks(fwd, coll.short)
        self.singles_full = [self.full.slice(i, i + 1) for i in range(len(self.full))]
        self.singles_short = [self.short.slice(i, i + 1) for i in range(len(self.short))]
        t0 = time.perf_counter()
        truth = get_engine(self.index, "exact").search(self.full, max(ks))
        logger.info("exact truth for %d queries in %.1f s", len(self.full), time.perf_counter() - t0)
        self.truth: list[np.ndarray] = [truth.rows[truth.qpos == i] for i in range(len(self.full))]
        self.frames_full = pd.DataFrame({"qid": coll.qids, "query_toks": coll.expanded})
        self.frames_short = pd.DataFrame({"qid": coll.qids, "query_toks": coll.short})

    def recall(self, got: dict[int, np.ndarray], k: int) -> float:
        vals = []
        for i, rows in got.items():
            want = self.truth[i][:k]
            if len(want):
                vals.append(len(set(rows[:k].tolist()) & set(want.tolist())) / len(want))
        return float(np.mean(vals)) if vals else float("nan")

    def time_queries(self, run_one: Callable[[int], np.ndarray], budget_s: float) -> tuple[np.ndarray, dict]:
        """Per-query ms of ``run_one(i)`` over the queries in order until done or over budget; results by query."""
        # warm-up: loads, compiles, and refills the caches the previous setting evicted (its first queries would
        # otherwise pay for that); not timed, and bounded by a tenth of the budget
        started = time.perf_counter()
        for i in range(min(20, len(self.full))):
            run_one(i)
            if time.perf_counter() - started > budget_s / 10:
                break
        times, got = [], {}
        started = time.perf_counter()
        for i in range(len(self.full)):
            t0 = time.perf_counter()
            got[i] = run_one(i)
            times.append((time.perf_counter() - t0) * 1000)
            if time.perf_counter() - started > budget_s:
                break
        return np.array(times), got

    def time_batch(self, run_batch: Callable[[QueryBatch, int], object], threads: int, n: int) -> float:
        """Queries/s of one batch call over the first n queries."""
        batch = self.full.slice(0, n)
        t0 = time.perf_counter()
        run_batch(batch, threads)
        return n / (time.perf_counter() - t0)


def rows_of(hits) -> np.ndarray:
    return hits.rows


def settings_for(b: Bench, k: int, small: bool) -> list[dict]:
    """The measured settings at k: name, engine, expanded flag, single-query function, batch function, e2e."""
    idx = b.index
    out = []

    def engine_setting(engine: str, setting: str, expanded: bool = True, batch: bool = True, **kw):
        eng = get_engine(idx, engine)
        singles = b.singles_full if expanded else b.singles_short
        out.append(
            {
                "engine": engine,
                "setting": setting,
                "expanded": expanded,
                "kw": kw,
                "one": lambda i: eng.search(singles[i], k, **kw).rows,
                "batch": (lambda q, t: eng.search(q, k, threads=t, **kw)) if batch and expanded else None,
                "e2e": idx.retriever(num_results=k, engine=engine, **kw),
                "frames": b.frames_full if expanded else b.frames_short,
            }
        )

    engine_setting("taat", "default (bytes for df >= 5%)")
    if not small:
        engine_setting("taat", "bytes for df >= 2%", dense_min_df=0.02, batch=False)
        engine_setting("taat", "bytes for df >= 10%", dense_min_df=0.1, batch=False)
    engine_setting("exact", "scipy csr", batch=False)
    engine_setting("pisa", "maxscore", algorithm="maxscore")
    engine_setting("pisa", "block_max_wand (pyterrier-pisa default)", algorithm="block_max_wand", batch=False)
    engine_setting("pisa", "maxscore unexpanded", expanded=False, algorithm="maxscore")
    engine_setting("taat", "unexpanded", expanded=False)
    try:
        seismic = get_engine(idx, "seismic")
        if b.coll.flops_target > 20 and not (b.seismic_all or seismic.is_built()):
            raise ImportError(
                "not built above FLOPs 20 unless --seismic-all (its build took 14 min at FLOPs 80 on 2 cores); "
                "or --reuse a --workdir where it was built"
            )
        engine_setting("seismic", "auto knobs (query_cut from k and query length)")
        engine_setting(
            "seismic", "pyseismic defaults (query_cut 10, heap_factor 0.7)", query_cut=10, heap_factor=0.7
        )
    except ImportError as e:
        logger.warning("seismic not measured: %s", e)

    # "no expansion >> expansion": taat on the unexpanded query, exact re-scoring with the expanded one
    from pyterrier_d2s.index.results import score_pairs

    taat = get_engine(idx, "taat")
    for depth in (100, 1000):
        if depth < k:
            continue

        def rescored(i: int, depth: int = depth) -> np.ndarray:
            cand = taat.search(b.singles_short[i], depth)
            scores = score_pairs(idx, b.singles_full[i], cand.qpos, cand.rows)
            return sort_hits(cand.qpos, cand.rows, scores, k).rows

        out.append(
            {
                "engine": "taat>>rescore",
                "setting": f"unexpanded top-{depth} >> rescore expanded",
                "expanded": False,
                "kw": {},
                "one": rescored,
                "batch": None,
                "e2e": None,
                "frames": None,
            }
        )

    # adaptive: certified (exact) and calibrated on the first 100 queries (recall measured on all)
    cert = idx.adaptive_retriever(num_results=k)
    out.append(
        {
            "engine": "adaptive",
            "setting": "certified (seed: 16 heaviest terms)",
            "expanded": True,
            "kw": {},
            "one": lambda i: cert.search(b.singles_full[i]).rows,
            "batch": None,
            "e2e": cert,
            "frames": b.frames_full,
            "stats": cert,
        }
    )
    sample = b.frames_full.iloc[: min(100, len(b.frames_full))]
    cal = cert.calibrate(sample, target_recall=0.99)
    out.append(
        {
            "engine": "adaptive",
            "setting": f"calibrated depth {cal.depth} (recall 0.99 on {len(sample)} queries)",
            "expanded": True,
            "kw": {"depth": cal.depth},
            "one": lambda i: cal.search(b.singles_full[i]).rows,
            "batch": None,
            "e2e": None,
            "frames": None,
        }
    )
    return out


def engine_cost(b: Bench, engine: str, kw: dict) -> tuple[float | None, float | None]:
    """(build_s, index_mb) of an engine's own structures (cached after the first call)."""
    idx = b.index
    key = (engine, tuple(sorted(kw.items())))
    cache = b.__dict__.setdefault("_costs", {})
    if key in cache:
        return cache[key]
    if engine == "pisa":  # built on first use, like taat and seismic
        coll = get_engine(idx, "pisa").collection()
        coll.searcher()
        cost = (engine_info(coll.path)["build_seconds"], dir_size_mb(coll.path) + b.forward_mb)
    elif engine == "exact":
        t0 = time.perf_counter()
        _ = idx.forward().transposed
        cost = (time.perf_counter() - t0, b.forward_mb)
    elif engine == "taat":
        eng = get_engine(idx, "taat")
        d = kw.get("dense_min_df", eng.settings["dense_min_df"])
        path = eng.path(d)
        eng.layout(d)
        cost = (engine_info(path)["build_seconds"], dir_size_mb(path) + b.forward_mb)
    elif engine == "seismic":
        eng = get_engine(idx, "seismic")
        path = eng.path()
        eng.seismic_index()
        cost = (engine_info(path)["build_seconds"], dir_size_mb(path) + b.forward_mb)
    else:
        cost = (None, None)
    cache[key] = cost
    return cost


def measure(b: Bench, k: int, small: bool, emit: Callable[[dict], None]) -> None:
    coll = b.coll
    for s in settings_for(b, k, small):
        base_engine = {"taat>>rescore": "taat", "adaptive": "taat"}.get(s["engine"], s["engine"])
        build_s, index_mb = engine_cost(b, base_engine, s["kw"] if s["engine"] == base_engine else {})
        times, got = b.time_queries(s["one"], b.budget_s)
        row = {
            "engine": s["engine"],
            "setting": s["setting"],
            "flops": round(coll.flops, 2),
            "collection": f"{len(coll.docnos)} docs, FLOPs~{coll.flops_target:g}",
            "k": k,
            "expanded": s["expanded"],
            "ms_per_query": round(float(times.mean()), 4),
            "p50_ms": round(float(np.percentile(times, 50)), 4),
            "p99_ms": round(float(np.percentile(times, 99)), 4),
            "qps": round(1000.0 / float(times.mean()), 1),
            "recall": round(b.recall(got, k), 4),
            "n_queries": len(times),
            "build_s": None if build_s is None else round(build_s, 2),
            "index_mb": None if index_mb is None else round(index_mb, 1),
            "exact_engine": s["engine"] in ("taat", "exact") and s["expanded"],
        }
        if s.get("stats") is not None:
            # certification statistics over the queries just timed (one call per query)
            cert = s["stats"]
            stats = []
            for i in range(len(times)):
                cert.search(b.singles_full[i])
                stats.append(dict(cert.last_stats))
            row["certified_share"] = round(float(np.mean([st["certified"] for st in stats])), 3)
            row["mean_depth"] = round(float(np.mean([st["mean_depth"] for st in stats])), 1)
        if s["e2e"] is not None:
            frames = s["frames"]
            n_e2e = max(2, min(len(times), 200))
            e2e = s["e2e"]
            e2e(frames.iloc[0:1])
            t_e2e = []
            started = time.perf_counter()
            for i in range(n_e2e):
                t0 = time.perf_counter()
                e2e(frames.iloc[i : i + 1])
                t_e2e.append((time.perf_counter() - t0) * 1000)
                if time.perf_counter() - started > b.budget_s / 2:
                    break
            row["e2e_ms_per_query"] = round(float(np.mean(t_e2e)), 4)
        if s["batch"] is not None and k in (min(b.ks), max(b.ks)):
            n = int(min(len(b.full), max(20, 0.5 * b.budget_s * 1000 / max(times.mean(), 1e-3))))
            row["batch_n"] = n
            row["batch_qps_1t"] = round(b.time_batch(s["batch"], 1, n), 1)
            row["batch_qps_2t"] = round(b.time_batch(s["batch"], 2, n), 1)
        emit(row)


def paper_rows() -> list[dict]:
    return [
        {
            "engine": "paper",
            "setting": f"Table 6: {name}",
            "flops": flops,
            "collection": "MSCOCO 123k (paper)",
            "k": 10,
            "expanded": expanded,
            "ms_per_query": ms,
            "p50_ms": None,
            "p99_ms": None,
            "qps": round(1000.0 / ms, 1),
            "recall": None,
            "n_queries": None,
            "build_s": None,
            "index_mb": None,
            "exact_engine": False,
        }
        for name, flops, expanded, ms in PAPER
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="5k docs, 40 queries, short budgets (< 1 min)")
    ap.add_argument("--json", action="store_true", help="print all rows as a JSON list on the last line")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON list to this file")
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--flops", type=float, nargs="+", default=[11.0, 80.0])
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--budget-s", type=float, default=None, help="time budget per setting and k")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reuse", action="store_true", help="reuse indexes (and engine files) found in --workdir"
    )
    ap.add_argument(
        "--seismic-all",
        action="store_true",
        help="build Seismic above FLOPs 20 too (about 15 min at FLOPs 80)",
    )
    ap.add_argument(
        "--no-e2e-encode",
        action="store_true",
        help="skip the end-to-end figures with query encoding (head-built collections, see latency_e2e.py)",
    )
    ap.add_argument(
        "--e2e-only",
        action="store_true",
        help="only the end-to-end figures with query encoding (not the engines on the synthetic collections)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    n_docs = args.docs or (5_000 if args.small else 123_000)
    n_queries = args.queries or (40 if args.small else 1000)
    budget = args.budget_s or (0.15 if args.small else 4.0)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="d2s_latency_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    started = time.perf_counter()
    try:
        for f in args.flops:
            if not args.e2e_only:
                coll = make_collection(f, n_docs, n_queries, args.seed)
                b = Bench(coll, workdir, budget, args.ks, reuse=args.reuse)
                b.seismic_all = args.seismic_all
                for k in args.ks:
                    measure(b, k, args.small, emit)
                del b
            if not args.no_e2e_encode:
                hc = latency_e2e.build(f, n_docs, n_queries, workdir, args.seed, args.reuse)
                latency_e2e.measure_e2e(hc, min(args.ks), budget, emit)
                del hc
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    for r in paper_rows():
        emit(r)
    logger.info(
        "done in %.0f s on %s (%d CPUs, load %s)",
        time.perf_counter() - started,
        platform.processor() or platform.machine(),
        os.cpu_count(),
        os.getloadavg(),
    )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
