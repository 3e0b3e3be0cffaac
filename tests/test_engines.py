"""Retrieval engines (taat, exact, seismic) and the adaptive retriever against brute-force float64 scoring."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import scipy.sparse as sp

from pyterrier_d2s.index import D2SIndex, MissingDependencyError
from pyterrier_d2s.index.engines import QueryBatch, get_engine

N_DOCS = 400
N_TERMS = 500
N_QUERIES = 30
TERMS = np.array([f"w{i}" for i in range(N_TERMS)])
RESULT_COLUMNS = ["qid", "query_toks", "docno", "score", "rank"]


def _matrix(rng: np.random.Generator, rows: int, nnz: int, p: np.ndarray) -> sp.csr_matrix:
    indptr, cols = [0], []
    for _ in range(rows):
        n = int(rng.integers(1, 2 * nnz))
        cols.extend(np.sort(rng.choice(N_TERMS, size=n, replace=False, p=p)))
        indptr.append(len(cols))
    data = np.log1p(rng.gamma(0.7, 2.0, size=len(cols))).clip(1e-4, 4.0).astype(np.float32)
    return sp.csr_matrix((data, np.array(cols), np.array(indptr)), shape=(rows, N_TERMS))


class Collection:
    """Zipf-like term popularity: a few terms in most documents (taat's byte columns), a long tail of rare ones."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        p = 1.0 / np.arange(1, N_TERMS + 1) ** 1.1
        p /= p.sum()
        docs = _matrix(rng, N_DOCS, 25, p).tolil()
        docs[5] = 0  # an empty document
        docs[11] = docs[10]  # identical documents: tied scores, broken by index order
        docs = docs.tocsr()
        docs.eliminate_zeros()
        self.docs = docs.astype(np.float32)
        self.docnos = np.array([f"d{i}" for i in range(N_DOCS)])
        self.queries = _matrix(rng, N_QUERIES, 30, p)
        self.qids = [f"q{i}" for i in range(N_QUERIES)]
        self.query_toks = [
            {TERMS[j]: float(v) for j, v in zip(*_row(self.queries, i), strict=True)}
            for i in range(N_QUERIES)
        ]
        self.dense_docs = self.docs.toarray().astype(np.float64)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"qid": self.qids, "query_toks": self.query_toks})

    def exact(self, toks: dict[str, float]) -> np.ndarray:
        q = np.zeros(N_TERMS)
        for t, w in toks.items():
            q[int(t[1:])] = w
        return self.dense_docs @ q


def _row(m: sp.csr_matrix, i: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = m.indptr[i], m.indptr[i + 1]
    return m.indices[lo:hi], m.data[lo:hi]


@pytest.fixture(scope="module")
def coll() -> Collection:
    return Collection(seed=3)


@pytest.fixture(scope="module")
def index(coll, tmp_path_factory) -> D2SIndex:
    path = tmp_path_factory.mktemp("engines") / "idx.d2s"
    return D2SIndex(path, verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)


def check_exact(res: pd.DataFrame, coll: Collection, toks: list[dict], qids: list[str], k: int) -> None:
    """Same top-k as brute force: scores within float32 tolerance, ranks 0.., ties by index order; documents
    may differ only where brute-force scores are tied with the k-th (within tolerance)."""
    assert list(res.columns[-3:]) == ["docno", "score", "rank"]
    groups = {q: g for q, g in res.groupby("qid", sort=False)}
    for q, qid in zip(toks, qids, strict=True):
        exact = coll.exact(q)
        order = np.lexsort((np.arange(N_DOCS), -exact))
        want = order[exact[order] > 0][:k]
        got = groups.get(qid, res.iloc[:0])
        assert len(got) == len(want), qid
        if not len(want):
            continue
        rows = np.array([int(d[1:]) for d in got["docno"]])
        np.testing.assert_allclose(got["score"].to_numpy(), exact[rows], rtol=2e-6, atol=1e-6)
        assert list(got["rank"]) == list(range(len(got)))
        s = got["score"].to_numpy()
        assert (np.diff(s) <= 0).all()
        assert all(rows[i] < rows[i + 1] for i in range(len(s) - 1) if s[i] == s[i + 1])
        tol = 2e-6 * max(1.0, exact[want[0]])
        kth = exact[want[-1]]
        for r in set(rows) ^ set(want):
            assert abs(exact[r] - kth) <= tol, (qid, r)
        # the documents agree rank by rank except among near-ties
        for a, b in zip(rows, want, strict=True):
            assert a == b or abs(exact[a] - exact[b]) <= tol


# ---- exact engines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["taat", "exact"])
@pytest.mark.parametrize("k", [1, 7, 50, 1000])
def test_exact_engines_equal_brute_force(index, coll, engine, k):
    res = index.retriever(num_results=k, engine=engine)(coll.frame())
    check_exact(res, coll, coll.query_toks, coll.qids, k)


@pytest.mark.parametrize("dense_min_df", [0.0, 0.02, 1.0])
def test_taat_layouts_all_exact(index, coll, dense_min_df):
    """Every term dense, the default mix, and no dense term at all give the same exact results."""
    res = index.retriever(num_results=20, engine="taat", dense_min_df=dense_min_df)(coll.frame())
    check_exact(res, coll, coll.query_toks, coll.qids, 20)


def test_taat_ties_broken_by_index_order(index, coll):
    # the query is document 10 itself: documents 10 and 11 are identical and tie for the top
    toks = {TERMS[j]: float(v) for j, v in zip(*_row(coll.docs, 10), strict=True)}
    frame = pd.DataFrame({"qid": ["t"], "query_toks": [toks]})
    for engine in ["taat", "exact"]:
        res = index.retriever(num_results=5, engine=engine)(frame)
        assert list(res["docno"][:2]) == ["d10", "d11"]
        assert res["score"].iloc[0] == res["score"].iloc[1]


def test_taat_weights_summed_and_unknown_terms_dropped(index, coll):
    q = dict(coll.query_toks[0])
    term = next(iter(q))
    frame = pd.DataFrame({"qid": ["a"], "query_toks": [{**q, "nope": 5.0, "w1": -1.0}]})
    q_expected = {t: w for t, w in q.items() if not (t == "w1")}
    res = index.retriever(num_results=10, engine="taat")(frame)
    check_exact(res, coll, [q_expected], ["a"], 10)
    assert term in q_expected


@pytest.mark.parametrize("engine", ["taat", "exact", "seismic"])
def test_unknown_queries_and_empty_frames(index, engine):
    if engine == "seismic":
        pytest.importorskip("seismic", reason="pyseismic-lsr not installed (the [seismic] extra)")
    retr = index.retriever(num_results=10, engine=engine)
    empty = retr(
        pd.DataFrame({"qid": pd.Series([], dtype=object), "query_toks": pd.Series([], dtype=object)})
    )
    assert len(empty) == 0 and list(empty.columns) == ["qid", "query_toks", "docno", "score", "rank"]
    frame = pd.DataFrame({"qid": ["u", "e", "ok"], "query_toks": [{"zzz": 1.0}, {}, {"w0": 1.0, "zzz": 2.0}]})
    res = retr(frame)
    assert set(res["qid"]) == {"ok"} and len(res) == 10
    none = retr(frame.iloc[:2])
    assert len(none) == 0 and list(none.columns) == RESULT_COLUMNS


@pytest.mark.parametrize("engine", ["taat", "exact", "seismic"])
def test_inspect_and_rank_cutoff(index, coll, engine):
    if engine == "seismic":
        pytest.importorskip("seismic", reason="pyseismic-lsr not installed (the [seismic] extra)")
    retr = index.retriever(num_results=30, engine=engine)
    assert pt.inspect.transformer_inputs(retr) == [["qid", "query_toks"]]
    assert pt.inspect.transformer_outputs(retr, ["qid", "query_toks"]) == RESULT_COLUMNS
    assert f"engine={engine!r}" in repr(retr)
    res = (retr % 4)(coll.frame())
    assert res.groupby("qid").size().max() == 4


@pytest.mark.parametrize("engine", ["taat", "exact", "seismic"])
def test_threads_give_same_results(index, coll, engine):
    if engine == "seismic":
        pytest.importorskip("seismic", reason="pyseismic-lsr not installed (the [seismic] extra)")
    frame = pd.concat([coll.frame()] * 3, ignore_index=True).assign(
        qid=lambda f: [f"q{i}" for i in range(len(f))]
    )
    one = index.retriever(num_results=15, engine=engine, threads=1)(frame)
    two = index.retriever(num_results=15, engine=engine, threads=2)(frame)
    pd.testing.assert_frame_equal(
        one[["qid", "docno", "score", "rank"]], two[["qid", "docno", "score", "rank"]]
    )


def test_engine_level_search_and_batches(index, coll):
    """The array API used by the benchmark gives the transformer's results; batches of any size agree."""
    fwd = index.forward()
    batch = QueryBatch.from_toks(fwd, coll.query_toks)
    eng = get_engine(index, "taat")
    whole = eng.search(batch, 12)
    parts = [eng.search(batch.take(np.array([i])), 12) for i in range(len(batch))]
    for i, p in enumerate(parts):
        sel = whole.qpos == i
        np.testing.assert_array_equal(whole.rows[sel], p.rows)
        np.testing.assert_array_equal(whole.scores[sel], p.scores)


def test_taat_scores_bitwise_equal_rescoring(index, coll):
    """Scores of documents scored in pairs or alone, and by the shared re-scorer, are the same float32 value."""
    from pyterrier_d2s.index.engines.taat import rescore

    batch = QueryBatch.from_toks(index.forward(), coll.query_toks)
    hits = get_engine(index, "taat").search(batch, 40)
    again = rescore(index, batch, hits.qpos, hits.rows)
    np.testing.assert_array_equal(hits.scores, again.astype(np.float64))
    sub = batch.take(np.array([3, 0, 3]))
    assert len(sub) == 3 and np.array_equal(sub.row(0)[0], batch.row(3)[0])
    assert np.array_equal(sub.row(1)[1], batch.row(0)[1])


def test_non_finite_query_weight_is_an_error(index):
    with pytest.raises(ValueError, match="not finite"):
        index.retriever(engine="taat")(pd.DataFrame({"qid": ["1"], "query_toks": [{"w0": float("inf")}]}))


def test_unknown_engine_and_setting(index):
    with pytest.raises(ValueError, match="unknown engine 'faiss'"):
        index.retriever(engine="faiss")
    with pytest.raises(TypeError, match="unknown setting"):
        index.retriever(engine="taat", query_cut=3)
    with pytest.raises(TypeError, match="unknown setting"):
        index.retriever(engine="exact", algorithm="maxscore")


def test_missing_optional_dependency_names_the_extra(index, monkeypatch):
    monkeypatch.setitem(sys.modules, "seismic", None)  # import seismic -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'pyterrier-d2s\[seismic\]'"):
        index.retriever(engine="seismic")


# ---- the engine cache in the index directory ----------------------------------------------------------------


def test_engine_files_built_lazily_and_reused(coll, tmp_path):
    idx = D2SIndex(tmp_path / "lazy.d2s", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    retr = idx.retriever(num_results=5, engine="taat")
    assert not (idx.path / "engines").exists()  # constructing a retriever builds nothing
    retr(coll.frame().iloc[:2])
    built = [p for p in (idx.path / "engines").iterdir()]
    assert [p.name for p in built] == ["taat-v1-dense0.05"]
    info = json.loads((built[0] / "engine.json").read_text())
    assert info["engine"] == "taat" and info["dense_terms"] > 0
    mtime = (built[0] / "engine.json").stat().st_mtime_ns
    again = D2SIndex(idx.path)  # a new process/object loads the cached files
    check_exact(
        again.retriever(num_results=5, engine="taat")(coll.frame()), coll, coll.query_toks, coll.qids, 5
    )
    assert (built[0] / "engine.json").stat().st_mtime_ns == mtime
    # an index built before engines existed (no engines/ directory, same pt_meta.json) opens and searches
    assert "engines" not in json.loads((idx.path / "pt_meta.json").read_text())


def test_engine_directory_without_engine_json_is_rebuilt(coll, tmp_path, caplog):
    idx = D2SIndex(tmp_path / "broken.d2s", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    idx.retriever(num_results=5, engine="taat")(coll.frame().iloc[:1])
    built = idx.path / "engines" / "taat-v1-dense0.05"
    (built / "engine.json").unlink()  # e.g. a copy cut short
    with caplog.at_level("WARNING"):
        res = D2SIndex(idx.path).retriever(num_results=5, engine="taat")(coll.frame())
    check_exact(res, coll, coll.query_toks, coll.qids, 5)
    assert (built / "engine.json").exists() and "rebuilding" in caplog.text


def test_killed_engine_build_leaves_nothing_that_loads(coll, tmp_path):
    idx = D2SIndex(tmp_path / "killed.d2s", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    script = textwrap.dedent(
        f"""
        import os
        import pyterrier_d2s.index.engines.taat as taat
        from pyterrier_d2s.index import D2SIndex
        real = taat.build_layout
        def dying(*a, **k):
            real(*a, **k)
            os._exit(9)  # like SIGKILL, after part of the files could have been written
        taat.build_layout = dying
        D2SIndex({str(idx.path)!r}).retriever(engine="taat").engine.layout()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    left = list((idx.path / "engines").iterdir())
    assert len(left) == 1 and left[0].name.startswith(".taat-v1") and ".tmp-" in left[0].name
    # the next use builds a complete copy next to the leftover and never loads the leftover
    res = D2SIndex(idx.path).retriever(num_results=5, engine="taat")(coll.frame())
    check_exact(res, coll, coll.query_toks, coll.qids, 5)
    assert (idx.path / "engines" / "taat-v1-dense0.05" / "engine.json").exists()


def test_unwritable_index_builds_engine_elsewhere(coll, tmp_path, monkeypatch, caplog):
    import pyterrier_d2s.index.engines._base as base

    idx = D2SIndex(tmp_path / "ro.d2s", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    real = base.tempfile.mkdtemp

    def refuse(*a, dir=None, **k):
        if dir is not None and Path(dir) == idx.path / "engines":
            raise PermissionError("read-only")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(base.tempfile, "mkdtemp", refuse)
    with caplog.at_level("WARNING"):
        res = idx.retriever(num_results=5, engine="taat")(coll.frame())
    assert "cannot write engine files" in caplog.text
    check_exact(res, coll, coll.query_toks, coll.qids, 5)
    assert not any((idx.path / "engines").glob("taat*"))


def test_overwritten_index_drops_old_engine_files(coll, tmp_path):
    path = tmp_path / "ow.d2s"
    idx = D2SIndex(path, verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    idx.retriever(num_results=3, engine="taat")(coll.frame().iloc[:1])
    half = coll.docs[:200]
    idx.index_matrix(coll.docnos[:200], half, TERMS, overwrite=True)
    res = idx.retriever(num_results=3, engine="taat")(coll.frame())
    assert set(res["docno"]) <= set(coll.docnos[:200])


# ---- seismic ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [10, 100])
def test_seismic_recall_with_default_knobs(index, coll, k):
    pytest.importorskip("seismic", reason="pyseismic-lsr not installed (the [seismic] extra)")
    res = index.retriever(num_results=k, engine="seismic")(coll.frame())
    truth = index.retriever(num_results=k, engine="exact")(coll.frame())
    rec = []
    for qid, g in truth.groupby("qid"):
        got = set(res[res["qid"] == qid]["docno"])
        rec.append(len(got & set(g["docno"])) / len(g))
    assert np.mean(rec) >= 0.99
    # returned documents carry exact scores, best first
    for qi, qid in enumerate(coll.qids):
        got = res[res["qid"] == qid]
        exact = coll.exact(coll.query_toks[qi])
        np.testing.assert_allclose(
            got["score"], exact[[int(d[1:]) for d in got["docno"]]], rtol=2e-6, atol=1e-6
        )
        assert (np.diff(got["score"].to_numpy()) <= 0).all()


# ---- adaptive "no expansion >> expansion" ------------------------------------------------------------------


def test_adaptive_certified_equals_exact_when_bound_holds(index, coll):
    """Queries whose rest (beyond the 8 heaviest terms) is light: the bound certifies at some depth."""
    light = []
    for q in coll.query_toks:
        heavy = sorted(q, key=q.get, reverse=True)[:8]
        light.append({t: (w if t in heavy else w * 1e-3) for t, w in q.items()})
    frame = pd.DataFrame({"qid": coll.qids, "query_toks": light})
    retr = index.adaptive_retriever(num_results=10, seed_terms=8, start_depth=10)
    res = retr(frame)
    check_exact(res, coll, light, coll.qids, 10)
    assert retr.last_stats["certified"] == N_QUERIES and retr.last_stats["fallback"] == 0
    assert pt.inspect.transformer_outputs(retr, ["qid", "query_toks"]) == RESULT_COLUMNS


def test_adaptive_falls_back_to_exact_when_bound_cannot_hold(index, coll):
    retr = index.adaptive_retriever(num_results=10, seed_terms=2, start_depth=10, max_depth=20)
    res = retr(coll.frame())
    check_exact(res, coll, coll.query_toks, coll.qids, 10)
    assert retr.last_stats["fallback"] > 0
    assert retr.last_stats["certified"] + retr.last_stats["fallback"] == N_QUERIES


def test_adaptive_seed_column_and_calibration(index, coll):
    own = [dict(list(q.items())[:5]) for q in coll.query_toks]
    frame = coll.frame().assign(own=own)
    retr = index.adaptive_retriever(num_results=10, seed_column="own")
    assert pt.inspect.transformer_inputs(retr) == [["qid", "query_toks", "own"]]
    check_exact(retr(frame), coll, coll.query_toks, coll.qids, 10)
    fixed = retr.calibrate(frame, target_recall=0.95)
    assert fixed.depth in fixed.calibration["recall_by_depth"]
    assert fixed.calibration["recall_by_depth"][fixed.depth] >= 0.95
    res = fixed(frame)
    assert res.groupby("qid").size().max() == 10
    empty = retr(frame.iloc[:0])
    assert len(empty) == 0 and {"docno", "score", "rank"} <= set(empty.columns)
