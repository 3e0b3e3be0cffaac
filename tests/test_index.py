"""Tests for pyterrier_d2s.index: PISA vs exact float scoring, within the derived quantisation bound."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import pytest
import scipy.sparse as sp

from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.index.engines.pisa import _pyterrier_pisa, quantisation

N_DOCS = 300
N_QUERIES = 25
# lower-case synthetic vocabulary, plus real-looking WordPiece/stopword/non-ASCII terms
TERMS = np.array([f"w{i}" for i in range(380)] + ["the", "a", "##s", "café", "##ü", "π"])


def _weights(rng: np.random.Generator, n: int, low: float = 0.0) -> np.ndarray:
    # like a log(1 + relu(x)) head: many small weights, a long tail, capped at 4
    w = np.log1p(rng.gamma(0.7, 2.0, size=n)).clip(1e-4, 4.0)
    return np.maximum(w, low).astype(np.float32)


def _random_matrix(rng: np.random.Generator, rows: int, nnz_per_row: int, low: float = 0.0) -> sp.csr_matrix:
    # Zipf-like term popularity, so some terms have long posting lists
    p = 1.0 / np.arange(1, len(TERMS) + 1) ** 0.8
    p /= p.sum()
    indptr, cols = [0], []
    for _ in range(rows):
        n = rng.integers(1, 2 * nnz_per_row)
        cols.extend(np.sort(rng.choice(len(TERMS), size=min(n, len(TERMS)), replace=False, p=p)))
        indptr.append(len(cols))
    data = _weights(rng, len(cols), low)
    return sp.csr_matrix((data, np.array(cols), np.array(indptr)), shape=(rows, len(TERMS)))


def _as_dicts(m: sp.csr_matrix) -> list[dict[str, float]]:
    return [
        {
            TERMS[j]: float(v)
            for j, v in zip(
                m.indices[m.indptr[i] : m.indptr[i + 1]], m.data[m.indptr[i] : m.indptr[i + 1]], strict=True
            )
        }
        for i in range(m.shape[0])
    ]


class Collection:
    def __init__(self, seed: int, low: float = 0.0):
        rng = np.random.default_rng(seed)
        keep = np.ones(N_DOCS)
        keep[7] = 0  # an empty document
        self.docs = sp.csr_matrix(sp.diags(keep) @ _random_matrix(rng, N_DOCS, 20, low), dtype=np.float32)
        self.docs.eliminate_zeros()
        self.docnos = np.array([f"d{i}" for i in range(N_DOCS)])
        self.queries = _random_matrix(rng, N_QUERIES, 30, low)
        self.qids = [f"q{i}" for i in range(N_QUERIES)]
        self.query_toks = _as_dicts(self.queries)
        self.dense_docs = self.docs.toarray().astype(np.float64)
        self.dense_queries = self.queries.toarray().astype(np.float64)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"qid": self.qids, "query_toks": self.query_toks, "extra": range(N_QUERIES)})

    def exact(self, qi: int) -> np.ndarray:
        """Brute-force float64 scores of query qi against every document."""
        return self.dense_docs @ self.dense_queries[qi]


@pytest.fixture(scope="module")
def coll() -> Collection:
    return Collection(seed=1)


@pytest.fixture(scope="module")
def index(coll, tmp_path_factory) -> D2SIndex:
    idx = D2SIndex(tmp_path_factory.mktemp("idx") / "main.d2s", verbose=False)
    # the dict path (with an empty toks doc) rather than index_matrix, to cover it
    docs = [{"docno": d, "toks": t} for d, t in zip(coll.docnos, _as_dicts(coll.docs), strict=True)]
    assert docs[7]["toks"] == {}
    return idx.indexer().index(iter(docs))


def _by_qid(res: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {q: g for q, g in res.groupby("qid", sort=False)}


# ---- quantisation ---------------------------------------------------------------------------------------


def test_pair_bound_holds_on_integer_arithmetic():
    """The derived bound holds for the exact integer PISA formula, for many random pairs and scales."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        q, d = _weights(rng, n), _weights(rng, n)
        s, t = rng.choice(quantisation.SCALE_LADDER[:10], size=2)
        pisa = float((quantisation.quantise(q, t) * quantisation.quantise(d, s)).sum()) / (s * t)
        exact = float(q.astype(np.float64) @ d.astype(np.float64))
        assert 0.0 <= exact - pisa < quantisation.pair_error_bound(q, d, s, t)


def test_choose_scale_is_smallest_meeting_target():
    w = _weights(np.random.default_rng(3), 5000)
    s = quantisation.choose_scale(w, 0.005)
    assert quantisation.mass_loss(w, s) < 0.005
    smaller = [x for x in quantisation.SCALE_LADDER if x < s]
    assert all(quantisation.mass_loss(w, x) >= 0.005 for x in smaller)


def test_lost_mass_recorded_and_below_limit(index, coll):
    meta = json.loads((index.path / "pt_meta.json").read_text())
    assert (
        meta["type"] == "sparse_index" and meta["format"] == "d2s" and meta["package_hint"] == "pyterrier-d2s"
    )
    assert meta["empty_docs"] == 1 and meta["num_docs"] == N_DOCS and len(index) == N_DOCS
    assert "doc_scale" not in meta  # quantisation belongs to the PISA engine, not to the artifact
    pisa = index.engine("pisa")
    w = coll.docs.data.astype(np.float64)
    s = pisa.doc_scale
    lost = (w.sum() - (np.floor(w * s) / s).sum()) / w.sum()
    assert pisa.collection().info["doc_mass_lost"] == pytest.approx(lost, rel=1e-9)
    assert lost < 0.005
    assert s == quantisation.choose_scale(w, 0.005)  # the smallest ladder scale meeting the limit
    q_lost = pisa.query_mass_loss(coll.query_toks)
    qw = coll.queries.data.astype(np.float64)
    t = pisa.query_scale
    assert t == s
    assert q_lost == pytest.approx((qw.sum() - (np.floor(qw * t) / t).sum()) / qw.sum(), rel=1e-9)
    t2 = pisa.choose_query_scale(coll.query_toks)
    assert pisa.query_mass_loss(coll.query_toks, t2) < 0.005


def test_pisa_files_identical_to_pyterrier_pisa_toks_indexer(index, coll, tmp_path):
    """The vectorised collection writer produces exactly what pyterrier-pisa's toks indexer writes."""
    from pyterrier_pisa import PisaIndex

    assert _pyterrier_pisa.version_supported(_pyterrier_pisa.installed_version()), (
        f"pyterrier-pisa {_pyterrier_pisa.installed_version()} is outside the adapter's supported range "
        f"{_pyterrier_pisa.SUPPORTED_VERSIONS}: check its internals and widen the range"
    )
    assert _pyterrier_pisa.version_supported("0.4.9") and not _pyterrier_pisa.version_supported("0.5.0")
    pisa = index.engine("pisa").collection()
    ref = PisaIndex(str(tmp_path / "ref"), stemmer="none")
    docs = [{"docno": d, "toks": t} for d, t in zip(coll.docnos, _as_dicts(coll.docs), strict=True)]
    ref.toks_indexer(scale=pisa.doc_scale).index(docs)
    for name in [
        "inv.docs",
        "inv.freqs",
        "inv.sizes",
        "fwd.documents",
        "fwd.terms",
        "fwd.doclex",
        "fwd.termlex",
    ]:
        assert (tmp_path / "ref" / name).read_bytes() == (pisa.path / name).read_bytes(), name


def test_pisa_is_built_on_first_use_or_when_named_at_build_time(coll, tmp_path):
    lazy = D2SIndex(tmp_path / "lazy", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    assert not (lazy.path / "pisa").exists() and not (lazy.path / "engines").exists()
    assert not any("pisa" in str(p.relative_to(lazy.path)) for p in lazy.path.rglob("*"))  # none unless asked
    retr = lazy.retriever(num_results=5, engine="pisa")
    assert not (lazy.path / "engines").exists()  # constructing a retriever builds nothing
    res = retr(coll.frame())
    built = lazy.path / "engines" / "pisa-v1-mml0.005"
    info = json.loads((built / "engine.json").read_text())
    # hashed like the other engines' files (checked whenever the engine loads them)
    assert info["engine"] == "pisa" and {"inv.docs", "fwd.terms", "pt_meta.json"} <= set(info["files"])
    assert info["doc_scale"] == quantisation.choose_scale(coll.docs.data, 0.005)
    eager = D2SIndex(tmp_path / "eager", verbose=False).index_matrix(
        coll.docnos, coll.docs, TERMS, engines=("pisa",)
    )
    assert (eager.path / "engines" / "pisa-v1-mml0.005" / "engine.json").exists()
    for name in ("inv.docs", "inv.freqs", "inv.sizes", "fwd.terms"):
        assert (built / name).read_bytes() == (
            eager.path / "engines" / "pisa-v1-mml0.005" / name
        ).read_bytes()
    pd.testing.assert_frame_equal(res, eager.retriever(num_results=5, engine="pisa")(coll.frame()))


def test_index_of_the_previous_layout_opens_and_searches(coll, tmp_path):
    """An index built before PISA was an engine (``pisa/`` at the top, PISA's scales in ``pt_meta.json``)."""
    idx = D2SIndex(tmp_path / "old", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    meta = json.loads((idx.path / "pt_meta.json").read_text())
    meta.update({"doc_scale": 100.0, "query_scale": 100.0, "max_mass_loss": 0.005, "pisa_terms": 3})
    (idx.path / "pt_meta.json").write_text(json.dumps(meta))
    (idx.path / "pisa").mkdir()
    (idx.path / "pisa" / "pt_meta.json").write_text('{"type": "sparse_index", "format": "pisa"}')
    old = D2SIndex(idx.path)
    assert old.built() and len(old) == N_DOCS
    for engine in ("taat", "exact"):
        got = _by_qid(old.retriever(num_results=5, engine=engine)(coll.frame()))
        for qi, qid in enumerate(coll.qids):
            exact = coll.exact(qi)
            order = np.lexsort((np.arange(N_DOCS), -exact))[:5]
            assert list(got[qid]["docno"]) == list(coll.docnos[order])


def test_one_cache_and_invalidate(coll, tmp_path):
    idx = D2SIndex(tmp_path / "cache", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    fwd, engine = idx.forward(), idx.engine("taat")
    assert idx.forward() is fwd and idx.engine("taat") is engine
    calls = []
    assert idx.cached(("test", "x"), lambda: calls.append(1) or 41) == 41
    assert idx.cached(("test", "x"), lambda: calls.append(1) or 42) == 41 and calls == [1]
    idx.invalidate()
    assert idx.forward() is not fwd and idx.engine("taat") is not engine
    assert idx.cached(("test", "x"), lambda: 42) == 42
    # a rebuild invalidates: the same object sees the new documents
    idx.index_matrix(coll.docnos[:10], coll.docs[:10], TERMS, overwrite=True)
    assert len(idx.forward().docnos) == 10 and len(idx) == 10


# ---- retrieval ------------------------------------------------------------------------------------------


def _check_against_brute_force(index: D2SIndex, coll: Collection, k: int, scale=None, **kw) -> int:
    """Assert PISA scores and top-k sets agree with brute force within the derived bound; return #swaps."""
    res = index.retriever(num_results=k, engine="pisa", scale=scale, **kw)(coll.frame())
    assert set(res.columns) >= {"qid", "query_toks", "extra", "docno", "score", "rank"}
    groups = _by_qid(res)
    pisa = index.engine("pisa").collection(scale)
    s = pisa.doc_scale
    t = kw.get("toks_scale") or pisa.query_scale
    rows = {d: i for i, d in enumerate(coll.docnos)}
    checked = swaps = 0
    for qi, qid in enumerate(coll.qids):
        exact = coll.exact(qi)
        bound = pisa.error_bound(coll.query_toks[qi], toks_scale=t)
        got = groups[qid]
        assert list(got["rank"]) == list(range(len(got)))
        assert (np.diff(got["score"].to_numpy()) <= 0).all()
        for docno, score in zip(got["docno"], got["score"], strict=True):
            r = rows[docno]
            shared = (coll.dense_queries[qi] > 0) & (coll.dense_docs[r] > 0)
            pair = quantisation.pair_error_bound(
                coll.dense_queries[qi][shared], coll.dense_docs[r][shared], s, t
            )
            assert abs(exact[r] - score) <= pair <= bound
            checked += 1
        # top-k: every doc in the symmetric difference is within 2B of the exact k-th score
        order = np.lexsort((np.arange(N_DOCS), -exact))
        exact_top = order[:k][exact[order[:k]] > 0]
        kth = exact[exact_top[-1]]
        diff = set(coll.docnos[exact_top]) ^ set(got["docno"])
        for docno in diff:
            assert abs(exact[rows[docno]] - kth) <= 2 * bound
        swaps += len(diff)
    assert checked >= k * N_QUERIES * 0.8
    return swaps


@pytest.mark.parametrize("algorithm", ["maxscore", "block_max_wand"])
def test_pisa_scores_within_bound_of_exact(index, coll, algorithm):
    _check_against_brute_force(index, coll, 10, algorithm=algorithm)


def test_bound_holds_with_coarse_quantisation(coll, tmp_path):
    # deliberately coarse scales, so that PISA's top-k really differs from the exact one: the bound must hold
    idx = D2SIndex(tmp_path / "coarse", verbose=False).index_matrix(coll.docnos, coll.docs, TERMS)
    swaps = _check_against_brute_force(idx, coll, 10, scale=5, toks_scale=5)
    assert swaps > 0
    coarse = idx.engine("pisa").collection(scale=5)
    assert coarse.doc_scale == 5 and coarse.info["doc_mass_lost"] > 0.005
    assert coarse.path.name == "pisa-v1-s5.0"  # each build setting is its own cached collection


def test_pisa_returns_only_matching_docs_and_misses_only_tiny_ones(index, coll):
    res = _by_qid(index.retriever(num_results=N_DOCS, engine="pisa")(coll.frame()))
    for qi, qid in enumerate(coll.qids):
        exact = coll.exact(qi)
        matching = set(coll.docnos[exact > 0])
        got = set(res[qid]["docno"])
        assert got <= matching
        bound = index.engine("pisa").error_bound(coll.query_toks[qi])
        for docno in matching - got:  # every shared weight truncated to 0 on one side
            assert exact[int(docno[1:])] <= bound


def test_engines_return_identical_sets_when_k_covers_all_matches(tmp_path):
    # weights >= 0.1 never truncate to 0 at the chosen scales, so PISA matches exactly the exact engine's docs
    c = Collection(seed=2, low=0.1)
    idx = D2SIndex(tmp_path / "coarse", verbose=False).index_matrix(c.docnos, c.docs, TERMS)
    assert 0.1 * idx.engine("pisa").doc_scale >= 1 and 0.1 * idx.engine("pisa").query_scale >= 1
    pisa = _by_qid(idx.retriever(num_results=N_DOCS, engine="pisa")(c.frame()))
    exact = _by_qid(idx.retriever(num_results=N_DOCS, engine="exact")(c.frame()))
    for qi, qid in enumerate(c.qids):
        assert set(pisa[qid]["docno"]) == set(exact[qid]["docno"]) == set(c.docnos[c.exact(qi) > 0])


def test_exact_engine_equals_brute_force(index, coll):
    k = 15
    res = _by_qid(index.retriever(num_results=k, engine="exact")(coll.frame()))
    for qi, qid in enumerate(coll.qids):
        exact = coll.exact(qi)
        order = np.lexsort((np.arange(N_DOCS), -exact))[:k]
        order = order[exact[order] > 0]
        got = res[qid]
        assert list(got["docno"]) == list(coll.docnos[order])
        np.testing.assert_allclose(got["score"], exact[order], rtol=1e-5)
        assert list(got["rank"]) == list(range(len(order)))
        assert (got["extra"] == qi).all()


@pytest.mark.parametrize("engine", ["pisa", "exact", "taat"])
def test_empty_and_unknown_queries(index, engine, caplog, monkeypatch):
    import pyterrier_d2s.index.forward as store

    monkeypatch.setattr(store, "_warned_case", False)
    retr = index.retriever(num_results=10, engine=engine)
    empty = retr(
        pd.DataFrame({"qid": pd.Series([], dtype=object), "query_toks": pd.Series([], dtype=object)})
    )
    assert len(empty) == 0
    assert {"qid", "docno", "score", "rank"} <= set(empty.columns)
    # unknown terms, an upper-case variant of a known term (PISA would lower-case it) and an empty dict
    frame = pd.DataFrame(
        {"qid": ["u", "U", "e", "ok"], "query_toks": [{"zzz": 1.0}, {"W1": 2.0}, {}, {"w1": 1.0}]}
    )
    with caplog.at_level("WARNING"):
        res = retr(frame)
    assert "'W1' is not lower-case" in caplog.text
    assert set(res["qid"]) == {"ok"}
    assert len(res) > 0
    only_unknown = retr(frame.iloc[:3])
    assert len(only_unknown) == 0 and {"qid", "docno", "score", "rank"} <= set(only_unknown.columns)


def test_input_validation(index):
    with pytest.raises(pt.validate.InputValidationError):
        index.retriever()(pd.DataFrame({"qid": ["1"], "query": ["dog"]}))
    with pytest.raises(pt.validate.InputValidationError):
        index.scorer()(pd.DataFrame({"qid": ["1"], "query_toks": [{"w1": 1.0}]}))
    with pytest.raises(ValueError, match="engine"):
        index.retriever(engine="faiss")


def test_rank_cutoff_and_repr(index, coll):
    for engine in ["pisa", "taat"]:
        res = (index.retriever(num_results=50, engine=engine) % 5)(coll.frame())
        assert res.groupby("qid").size().max() == 5
    assert "D2SIndex(" in repr(index.retriever()) and "engine='taat'" in repr(index.retriever())
    assert "maxscore" in repr(index.retriever(engine="pisa"))
    # PISA settings go with engine="pisa": the default engine does not take them
    with pytest.raises(TypeError, match="unknown setting"):
        index.retriever(algorithm="wand")
    assert "algorithm='wand'" in repr(index.retriever(engine="pisa", algorithm="wand"))
    assert repr(index.scorer()).endswith(".scorer()")


def test_inspect(index):
    for engine in ["pisa", "exact", "taat"]:
        retr = index.retriever(engine=engine)
        assert pt.inspect.transformer_inputs(retr) == [["qid", "query_toks"]]
        assert pt.inspect.transformer_outputs(retr, ["qid", "query_toks"]) == [
            "qid",
            "query_toks",
            "docno",
            "score",
            "rank",
        ]
    pipe = index.retriever() >> index.scorer()
    assert pt.inspect.transformer_outputs(pipe, ["qid", "query_toks"]) == [
        "qid",
        "query_toks",
        "docno",
        "score",
        "rank",
    ]


# ---- re-scoring -----------------------------------------------------------------------------------------


def test_scorer_equals_brute_force(index, coll):
    rng = np.random.default_rng(9)
    rows = []
    for qi, qid in enumerate(coll.qids[:10]):
        for d in rng.choice(N_DOCS, size=40, replace=False):
            rows.append(
                {
                    "qid": qid,
                    "docno": coll.docnos[d],
                    "query_toks": coll.query_toks[qi],
                    "score": -1.0,
                    "rank": 0,
                }
            )
    inp = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # scrambled order
    out = index.scorer()(inp)
    assert list(out.columns) == ["qid", "docno", "query_toks", "score", "rank"]
    for qi, qid in enumerate(coll.qids[:10]):
        got = out[out["qid"] == qid]
        exact = coll.exact(qi)
        cand = np.array([int(d[1:]) for d in inp[inp["qid"] == qid]["docno"]])
        np.testing.assert_allclose(got["score"], np.sort(exact[cand])[::-1], rtol=1e-5, atol=1e-6)
        # ranking equals brute-force order (ties excepted, which random float weights don't produce)
        assert list(got["docno"]) == list(coll.docnos[cand[np.argsort(-exact[cand], kind="stable")]])
        assert list(got["rank"]) == list(range(40))


def test_score_api(index, coll):
    docnos = ["d3", "d7", "d100", "d3"]
    got = index.score(coll.query_toks[0], docnos)
    np.testing.assert_allclose(got, coll.exact(0)[[3, 7, 100, 3]], rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="'nope'"):
        index.score(coll.query_toks[0], ["d1", "nope"])
    with pytest.raises(KeyError, match="'nope'"):
        index.scorer()(pd.DataFrame({"qid": ["1"], "docno": ["nope"], "query_toks": [{"w1": 1.0}]}))
    empty = index.scorer()(pd.DataFrame({"qid": [], "docno": [], "query_toks": []}))
    assert len(empty) == 0 and {"qid", "docno", "score", "rank"} <= set(empty.columns)


def test_retrieve_then_rescore_pipeline_and_experiment(index, coll):
    k = 10
    pipe = index.retriever(num_results=k, engine="pisa") >> index.scorer()
    res = _by_qid(pipe(coll.frame()))
    for qi, qid in enumerate(coll.qids):
        got = res[qid]
        exact = coll.exact(qi)
        np.testing.assert_allclose(
            got["score"], exact[[int(d[1:]) for d in got["docno"]]], rtol=1e-5, atol=1e-6
        )
        assert (np.diff(got["score"].to_numpy()) <= 0).all()
    # qrels from brute force: the exact top-1 of each query is relevant
    qrels = pd.DataFrame(
        {
            "qid": coll.qids,
            "docno": [coll.docnos[np.argmax(coll.exact(i))] for i in range(N_QUERIES)],
            "label": 1,
        }
    )
    exp = pt.Experiment(
        [index.retriever(num_results=k, engine="exact"), pipe, index.retriever(num_results=k, engine="pisa")],
        coll.frame(),
        qrels,
        eval_metrics=[ir_measures.R @ 1, ir_measures.R @ 10],
        names=["exact", "pisa>>scorer", "pisa"],
    )
    exp = exp.set_index("name")
    assert exp.loc["exact", "R@1"] == 1.0
    # re-scoring PISA's top-10 exactly recovers the true top-1 whenever PISA retrieved it
    assert exp.loc["pisa>>scorer", "R@1"] == exp.loc["pisa", "R@10"]


# ---- artifact life cycle --------------------------------------------------------------------------------


def test_reopen_and_artifact_load(index, coll, monkeypatch):
    again = D2SIndex(str(index.path))
    assert again.built() and len(again) == N_DOCS
    fwd = again.forward()
    assert fwd.matrix.dtype == np.float32 and list(fwd.docnos) == list(coll.docnos)
    # the dict path numbers terms in first-seen order: map columns back to TERMS and compare exactly
    cols = np.array([list(TERMS).index(t) for t in fwd.terms])
    dense = np.zeros_like(coll.dense_docs)
    dense[:, cols] = fwd.matrix.toarray()
    np.testing.assert_array_equal(dense, coll.dense_docs)
    # same retrieval as the original object
    a = again.retriever(num_results=5, engine="pisa")(coll.frame())
    b = index.retriever(num_results=5, engine="pisa")(coll.frame())
    assert a[["qid", "docno"]].equals(b[["qid", "docno"]])
    # pta.Artifact.load through the entry point declared in setup.cfg (installed metadata is not ours to edit)
    ep = importlib.metadata.EntryPoint(
        name="sparse_index.d2s", value="pyterrier_d2s.index:D2SIndex", group="pyterrier.artifact"
    )
    real = pt.utils.entry_points
    monkeypatch.setattr(
        pt.utils, "entry_points", lambda group: [ep] if group == "pyterrier.artifact" else real(group)
    )
    loaded = pta.Artifact.load(str(index.path))
    assert isinstance(loaded, D2SIndex) and len(loaded) == N_DOCS


def test_setup_cfg_declares_entry_point():
    cfg = (Path(__file__).parents[1] / "setup.cfg").read_text()
    assert "sparse_index.d2s = pyterrier_d2s.index:D2SIndex" in cfg


def test_duplicate_docno_is_an_error(tmp_path):
    idx = D2SIndex(tmp_path / "dup", verbose=False)
    docs = [
        {"docno": "1", "toks": {"a": 1.0}},
        {"docno": "123", "toks": {"b": 1.0}},
        {"docno": "123", "toks": {}},
    ]
    with pytest.raises(ValueError, match="duplicate docno '123'"):
        idx.indexer().index(docs)
    assert not idx.built() and not (tmp_path / "dup").exists()
    with pytest.raises(ValueError, match="duplicate docno 'x'"):
        idx.index_matrix(["x", "x"], sp.csr_matrix(np.ones((2, 1), dtype=np.float32)), ["a"])


@pytest.mark.parametrize(
    ("term", "weight", "msg"),
    [
        ("Dog", 1.0, "lower-case"),
        ("hot dog", 1.0, "whitespace"),
        ("dog", -1.0, "non-negative"),
        ("dog", np.nan, "finite"),
    ],
)
def test_bad_documents_rejected(tmp_path, term, weight, msg):
    with pytest.raises(ValueError, match=msg):
        D2SIndex(tmp_path / "bad", verbose=False).index([{"docno": "1", "toks": {term: weight}}])
    assert not (tmp_path / "bad").exists()


def _leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_interrupted_indexing_leaves_nothing_openable(tmp_path, coll):
    path = tmp_path / "interrupted"

    def docs():
        for i, t in enumerate(_as_dicts(coll.docs)):
            if i == 150:
                raise RuntimeError("boom")
            yield {"docno": coll.docnos[i], "toks": t}

    with pytest.raises(RuntimeError, match="boom"):
        D2SIndex(path, verbose=False).indexer().index(docs())
    assert not D2SIndex(path).built() and not path.exists()
    assert _leftovers(tmp_path, "interrupted") == []


def test_killed_indexing_leaves_nothing_openable(tmp_path):
    """A process killed while writing the manifest leaves only a temp dir that does not open as an index."""
    path = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, numpy as np, scipy.sparse as sp
        import pyterrier_d2s.index.building as building
        from pyterrier_d2s.index import D2SIndex
        def die(*a, **k):
            os._exit(9)  # like SIGKILL: no cleanup handlers run
        building.write_manifest = die
        D2SIndex({str(path)!r}, verbose=False).index_matrix(["a", "b"], sp.csr_matrix(np.ones((2, 2), dtype=np.float32)), ["x", "y"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    left = _leftovers(tmp_path, "killed")
    assert len(left) == 1 and (left[0] / "forward.npz").exists()  # it really died mid-build
    assert not D2SIndex(left[0]).built() and not D2SIndex(path).built() and not path.exists()
    # the next build of the same target removes what the killed one left (its builder process is gone)
    m = sp.csr_matrix(np.ones((2, 2), dtype=np.float32))
    D2SIndex(path, verbose=False).index_matrix(["a", "b"], m, ["x", "y"])
    assert D2SIndex(path).built() and _leftovers(tmp_path, "killed") == []
    assert not (path / ".builder-pid").exists()


def test_leftovers_of_a_live_build_are_kept(tmp_path):
    import os

    from pyterrier_d2s.index.building import _remove_leftovers_of_killed_builds

    target = tmp_path / "t"
    live, dead = tmp_path / ".t.tmp-live", tmp_path / ".t.tmp-dead"
    for d, pid in ((live, os.getpid()), (dead, 2**22 + 12345)):  # beyond pid_max: no such process
        d.mkdir()
        (d / ".builder-pid").write_text(str(pid))
    _remove_leftovers_of_killed_builds(target)
    assert live.exists() and not dead.exists()


def test_overwrite_rules(tmp_path):
    m = sp.csr_matrix(np.array([[1.0, 0.0], [0.5, 2.0]], dtype=np.float32))
    idx = D2SIndex(tmp_path / "ow", verbose=False).index_matrix(["a", "b"], m, ["x", "y"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        D2SIndex(tmp_path / "ow", verbose=False).index_matrix(["c"], m[:1], ["x", "y"])
    idx2 = D2SIndex(tmp_path / "ow", verbose=False).index_matrix(["c"], m[:1], ["x", "y"], overwrite=True)
    assert len(idx2) == 1 and list(idx2.forward().docnos) == ["c"] and len(idx) == 1
    assert _leftovers(tmp_path, "ow") == []
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a D2S index"):
        D2SIndex(other, verbose=False).index_matrix(["a"], m[:1], ["x", "y"], overwrite=True)
    assert (other / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("engine", ["pisa", "taat"])
def test_threads_give_same_results(index, coll, engine):
    one = index.retriever(num_results=20, engine=engine, threads=1)(coll.frame())
    two = index.retriever(num_results=20, engine=engine, threads=2)(coll.frame())
    pd.testing.assert_frame_equal(
        one[["qid", "docno", "score", "rank"]], two[["qid", "docno", "score", "rank"]]
    )


def test_degenerate_collections_rejected(tmp_path):
    with pytest.raises(ValueError, match="no documents"):
        D2SIndex(tmp_path / "none", verbose=False).index_matrix(
            [], sp.csr_matrix((0, 2), dtype=np.float32), ["x", "y"]
        )
    # PISA would abort the interpreter on an index without postings: its engine refuses it instead, whether
    # asked for at build time (nothing is left) or later (the index stays usable with the other engines)
    zero = sp.csr_matrix((2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="nothing to put in PISA"):
        D2SIndex(tmp_path / "zero", verbose=False).index_matrix(
            ["a", "b"], zero, ["x", "y"], engines=("pisa",)
        )
    assert not (tmp_path / "zero").exists() and _leftovers(tmp_path, "zero") == []
    idx = D2SIndex(tmp_path / "zero", verbose=False).index_matrix(["a", "b"], zero, ["x", "y"])
    frame = pd.DataFrame({"qid": ["1"], "query_toks": [{"x": 1.0}]})
    assert len(idx.retriever(engine="exact")(frame)) == 0 and len(idx.retriever(engine="taat")(frame)) == 0
    with pytest.raises(ValueError, match="nothing to put in PISA"):
        idx.retriever(engine="pisa")(frame)
    assert not list((idx.path / "engines").glob("pisa*"))


def test_native_build_output_held_unless_the_build_fails(capfd):
    native_output_held = _pyterrier_pisa.native_output_held

    with native_output_held():
        os.write(1, b"Create index: 1% [0s]\n")
        os.write(2, b"Storing score upper bounds: 1% [0s]\n")
    assert capfd.readouterr() == ("", "")
    with pytest.raises(RuntimeError, match="boom"), native_output_held():
        os.write(2, b"[error] lexicon is corrupt\n")
        raise RuntimeError("boom")
    assert "[error] lexicon is corrupt" in capfd.readouterr().err
    print("after")  # both descriptors are back
    assert capfd.readouterr().out == "after\n"
