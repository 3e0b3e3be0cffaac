"""Adaptive "no expansion >> expansion": retrieve with a few query terms, re-score with the whole query.

The paper's cheap pipeline retrieves candidates with the caption's own terms and re-scores them with the
expanded query; its quality depends on the candidate depth. :class:`D2SAdaptiveRetriever` chooses the depth
per query so that the result is *provably* the exact top-k of the expanded query, or uses a fixed depth
calibrated on a sample of queries for a target recall.

Certificate. Split the expanded query ``q`` into a seed ``s`` (its own terms, or its heaviest terms) and the
rest ``r = q - s`` (same weights). Retrieve the exact top-``c`` documents ``C`` of ``s`` (every other document
has ``s·d <= s_c``, the c-th seed score; 0 if fewer than c documents match the seed). A document outside ``C``
scores ``q·d = s·d + r·d <= s_c + R`` with ``R = sum over rest terms of r_t * max_d(d_t)``. So if the k-th best
exact score among ``C``, ``theta``, exceeds ``s_c + R`` (with a relative float32 margin), nothing outside ``C``
can enter the top-k and the re-scored top-k of ``C`` *is* the exact top-k. Otherwise the depth grows
(x ``growth``) up to ``max_depth``; queries still uncertified then fall back to a full exact retrieval with the
expanded query, so the output is always exact in this mode. A query goes to the fallback at once when deeper
candidates cannot help: when ``R`` alone reaches ``theta`` or every document matching the seed was retrieved. The certificate fires when the rest of the query
carries little weight on terms that can score high (``R`` small next to ``theta``), i.e. when expansion adds
low-weight terms; with heavy expansion the fallback does the work and the pipeline costs more than exact
retrieval alone. ``last_stats`` says how many queries were certified at which depth.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyterrier_alpha as pta

from .core import D2SIndex
from .engines import Engine, Hits, QueryBatch, engine_class, get_engine, sort_hits
from .results import empty_result, hits_frame, score_pairs
from .retrievers import QueryToksRetriever

__all__ = ["MARGIN", "D2SAdaptiveRetriever"]

logger = logging.getLogger(__name__)

#: relative slack of the certificate against float32 rounding (as the taat engine's bounds)
MARGIN = 1e-4


class D2SAdaptiveRetriever(QueryToksRetriever):
    """Seed retrieval + exact re-scoring with the expanded query, at a certified or calibrated depth.

    Input: ``qid`` + ``query_toks`` (the *expanded* query) and, if ``seed_column`` is given, that column
    (``{term: weight}``; only its terms are used, with the expanded query's weights). Output: a result frame
    with exact scores of the expanded query, best first, ties by index order.

    Args:
        index: the index.
        num_results: k.
        depth: ``None`` (default) certifies every query (see the module docstring: exact output); an integer
            uses that fixed candidate depth (approximate; see :meth:`calibrate`).
        seed_terms: size of the seed when ``seed_column`` is not given: the terms with the largest
            ``weight * max document weight`` (which minimises the bound ``R`` for that size).
        seed_column: column holding the seed query (e.g. the unexpanded ``D2SQueryEncoder(expansion=False)``
            output), instead of the heaviest terms.
        start_depth: first candidate depth of the certified mode (default ``max(100, 4 * k)``).
        growth: depth multiplier between rounds.
        max_depth: largest depth tried before the exact fallback (default ``64 * start_depth``).
        engine: exact engine for the seed retrieval and the fallback (``"taat"`` or ``"exact"``).
        threads: threads of the engine.
    """

    def __init__(
        self,
        index: D2SIndex,
        num_results: int = 10,
        *,
        depth: int | None = None,
        seed_terms: int = 16,
        seed_column: str | None = None,
        start_depth: int | None = None,
        growth: int = 4,
        max_depth: int | None = None,
        engine: str = "taat",
        threads: int = 1,
    ):
        if not engine_class(engine).exact:
            raise ValueError(f"the adaptive retriever needs an exact engine, not {engine!r}")
        if growth < 2:
            raise ValueError("growth must be at least 2")
        self.index = index
        self.num_results = int(num_results)
        self.depth = None if depth is None else int(depth)
        self.seed_terms = int(seed_terms)
        self.seed_column = seed_column
        self.start_depth = int(start_depth) if start_depth else max(100, 4 * self.num_results)
        self.growth = int(growth)
        self.max_depth = int(max_depth) if max_depth else 64 * self.start_depth
        self.engine_name = engine
        self.threads = int(threads)
        self.last_stats: dict[str, Any] = {}

    def __repr__(self) -> str:
        mode = "certified" if self.depth is None else f"depth={self.depth}"
        seed = f"seed_column={self.seed_column!r}" if self.seed_column else f"seed_terms={self.seed_terms}"
        return f"{self.index!r}.adaptive_retriever(num_results={self.num_results}, {mode}, {seed})"

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query_toks"] + ([self.seed_column] if self.seed_column else [])]

    # ---- the pieces --------------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The exact engine of the seed retrievals and the fallback."""
        return get_engine(self.index, self.engine_name)

    def split(self, full: QueryBatch, seeds: list[set[int]] | None) -> tuple[QueryBatch, np.ndarray]:
        """(seed batch, bound R of each query's rest): see the module docstring."""
        tmax = self.index.forward().term_max_array
        indptr = [0]
        terms, weights = [], []
        rest = np.zeros(len(full), dtype=np.float64)
        for i in range(len(full)):
            t, w = full.row(i)
            contrib = w.astype(np.float64) * tmax[t]
            if seeds is not None:
                keep = np.fromiter((int(x) in seeds[i] for x in t), dtype=bool, count=len(t))
            else:
                keep = np.zeros(len(t), dtype=bool)
                keep[np.argsort(-contrib, kind="stable")[: self.seed_terms]] = True
            rest[i] = contrib[~keep].sum()
            terms.append(t[keep])
            weights.append(w[keep])
            indptr.append(indptr[-1] + int(keep.sum()))
        seed = QueryBatch(
            np.asarray(indptr, dtype=np.int64),
            np.concatenate(terms).astype(np.int32) if terms else np.zeros(0, np.int32),
            np.concatenate(weights).astype(np.float32) if weights else np.zeros(0, np.float32),
        )
        return seed, rest

    def _seed_sets(self, inp: pd.DataFrame) -> list[set[int]] | None:
        if not self.seed_column:
            return None
        index = self.index.forward().term_index
        return [{index[t] for t in toks if t in index} for toks in inp[self.seed_column]]

    def _round(self, full: QueryBatch, seed: QueryBatch, positions: np.ndarray, depth: int):
        """Seed top-``depth`` of the queries at ``positions``, re-scored with the full queries.

        Returns (hits over positions' order: exact top-k of the candidates, c-th seed score per query).
        """
        sub_seed = seed.take(positions)
        sub_full = full.take(positions)
        cand = self.engine.search(sub_seed, depth, threads=self.threads)
        n = len(positions)
        counts = np.bincount(cand.qpos, minlength=n)
        last = np.r_[0, np.cumsum(counts)] - 1
        s_c = np.where(counts >= depth, cand.scores[np.maximum(last[1:], 0)], 0.0)
        scores = score_pairs(self.index, sub_full, cand.qpos, cand.rows)
        return sort_hits(cand.qpos, cand.rows, scores, self.num_results), s_c

    def search(self, full: QueryBatch, seeds: list[set[int]] | None = None) -> Hits:
        """Engine-level search (no DataFrames): ``Hits`` of the expanded queries ``full``."""
        seed, rest = self.split(full, seeds)
        live = np.flatnonzero(np.diff(full.indptr) > 0)
        parts: list[Hits] = []
        stats: dict[str, Any] = {"queries": int(len(live)), "certified": 0, "fallback": 0, "depths": []}
        if self.depth is not None:
            if len(live):
                hits, _ = self._round(full, seed, live, self.depth)
                parts.append(Hits(live[hits.qpos], hits.rows, hits.scores))
            stats["depths"] = [self.depth] * len(live)
        else:
            uncertified = self._certify(full, seed, rest, live, parts, stats)
            if len(uncertified):
                hits = self.engine.search(full.take(uncertified), self.num_results, threads=self.threads)
                parts.append(Hits(uncertified[hits.qpos], hits.rows, hits.scores))
                stats["fallback"] = int(len(uncertified))
        self.last_stats = {
            **{k2: v for k2, v in stats.items() if k2 != "depths"},
            "mean_depth": float(np.mean(stats["depths"])) if stats["depths"] else 0.0,
        }
        if not parts:
            return Hits.empty()
        return sort_hits(
            np.concatenate([p.qpos for p in parts]),
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.scores for p in parts]),
            self.num_results,
        )

    def _certify(
        self,
        full: QueryBatch,
        seed: QueryBatch,
        rest: np.ndarray,
        live: np.ndarray,
        parts: list[Hits],
        stats: dict[str, Any],
    ) -> np.ndarray:
        """Deepen the seed retrieval of the queries at ``live`` until certified (their hits go into ``parts``).

        Returns the positions of the queries left for the exact fallback, sorted.
        """
        k = self.num_results
        pending = live
        give_up = np.zeros(0, dtype=np.int64)
        depth = self.start_depth
        while len(pending):
            hits, s_c = self._round(full, seed, pending, depth)
            counts = np.bincount(hits.qpos, minlength=len(pending))
            ends = np.cumsum(counts)
            theta = np.where(counts >= k, hits.scores[np.maximum(ends - 1, 0)], 0.0)
            bound = (s_c + rest[pending]) * (1 + MARGIN)
            # fewer than k candidates scored > 0: certified only if nothing outside can score at all
            ok = np.where(counts >= k, bound < theta, bound <= 0.0)
            keep = ok[hits.qpos]
            parts.append(Hits(pending[hits.qpos[keep]], hits.rows[keep], hits.scores[keep]))
            stats["certified"] += int(ok.sum())
            stats["depths"].extend([depth] * int(ok.sum()))
            # deeper cannot help when the rest alone reaches theta (s_c only falls, theta rises little) or
            # when every seed match was already retrieved: those go straight to the exact fallback
            hopeless = ~ok & ((rest[pending] * (1 + MARGIN) >= theta) | (s_c <= 0.0))
            give_up = np.r_[give_up, pending[hopeless]]
            pending = pending[~ok & ~hopeless]
            if depth >= self.max_depth:
                break
            depth = min(self.max_depth, depth * self.growth)
        return np.sort(np.r_[pending, give_up]).astype(np.int64)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Top ``num_results`` documents of each expanded query."""
        pta.validate.query_frame(
            inp, extra_columns=["query_toks"] + ([self.seed_column] if self.seed_column else [])
        )
        if len(inp) == 0:
            return empty_result(inp)
        fwd = self.index.forward()
        full = QueryBatch.from_toks(fwd, inp["query_toks"])
        return hits_frame(inp, self.search(full, self._seed_sets(inp)), fwd)

    def calibrate(
        self, sample: pd.DataFrame, target_recall: float = 0.99, depths: list[int] | None = None
    ) -> D2SAdaptiveRetriever:
        """A fixed-depth copy whose depth is the smallest of ``depths`` reaching ``target_recall``.

        ``depths`` defaults to k, 2k, 4k, ... up to the collection size.

        Recall@k is measured against exact retrieval of the expanded queries of ``sample`` (a query frame as
        for :meth:`transform`). The returned retriever is approximate: the target holds on the sample, not as a
        guarantee; ``calibration`` on it records the recall of every depth tried.
        """
        n_docs = len(self.index.forward().docnos)
        default = [self.num_results * 2**i for i in range(40) if self.num_results * 2 ** (i - 1) < n_docs]
        depths = sorted({min(int(d), n_docs) for d in (depths or default)})
        curve = self._recall_curve(sample, depths, target_recall)
        chosen = next((d for d, recall in curve.items() if recall >= target_recall), depths[-1])
        out = D2SAdaptiveRetriever(
            self.index,
            self.num_results,
            depth=chosen,
            seed_terms=self.seed_terms,
            seed_column=self.seed_column,
            engine=self.engine_name,
            threads=self.threads,
        )
        out.calibration = {"target_recall": target_recall, "recall_by_depth": curve, "depth": chosen}
        if curve.get(chosen, 0.0) < target_recall:
            logger.warning("no depth up to %d reached recall %.3f on the sample", chosen, target_recall)
        return out

    def _recall_curve(
        self, sample: pd.DataFrame, depths: list[int], target_recall: float
    ) -> dict[int, float]:
        """Recall@k of the fixed depths ``depths`` on ``sample``, in order, up to the first reaching the target."""
        full = QueryBatch.from_toks(self.index.forward(), sample["query_toks"])
        want = _row_sets(self.engine.search(full, self.num_results, threads=self.threads), len(full))
        seed, _ = self.split(full, self._seed_sets(sample))
        live = np.flatnonzero([len(w) > 0 for w in want])
        curve: dict[int, float] = {}
        for d in depths:
            hits, _ = self._round(full, seed, live, d)
            got = _row_sets(hits, len(live))
            recalls = [len(g & want[p]) / len(want[p]) for g, p in zip(got, live, strict=True)]
            curve[d] = float(np.mean(recalls)) if len(live) else 1.0
            if curve[d] >= target_recall:
                break
        return curve


def _row_sets(hits: Hits, n: int) -> list[set[int]]:
    """The set of forward-store rows retrieved for each of ``n`` queries."""
    sets: list[set[int]] = [set() for _ in range(n)]
    for q, r in zip(hits.qpos.tolist(), hits.rows.tolist(), strict=True):
        sets[q].add(r)
    return sets


def _adaptive_retriever(self: D2SIndex, num_results: int = 10, **kwargs: Any) -> D2SAdaptiveRetriever:
    """ "No expansion >> expansion" at a certified (exact) or calibrated candidate depth.

    Retrieves with a seed of each expanded query (its own terms via ``seed_column``, or its heaviest
    ``seed_terms`` terms), re-scores the candidates exactly with the whole query, and deepens until a bound
    proves that no other document can enter the top-k (falling back to exact retrieval past ``max_depth``);
    or, with ``depth=`` / :meth:`~pyterrier_d2s.index.adaptive.D2SAdaptiveRetriever.calibrate`, uses a
    fixed depth chosen for a target recall on a sample of queries. See
    :class:`~pyterrier_d2s.index.adaptive.D2SAdaptiveRetriever` for the arguments and the bound.
    """
    return D2SAdaptiveRetriever(self, num_results, **kwargs)


D2SIndex.adaptive_retriever = _adaptive_retriever
