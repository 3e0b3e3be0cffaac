"""The PyTerrier side: encoders, image indexer, PISA retrieval, the expansion rescorer and pt.Experiment."""

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch
from ir_measures import RR, R

from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.evaluation import sparse_top_k
from pyterrier_d2s.experiment import (
    System,
    compare,
    dense_flex_index,
    query_flops,
)
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.image_indexer import D2SImageIndexer
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.measures import overlap_at_k, per_query_pearson
from pyterrier_d2s.model import D2S
from pyterrier_d2s.rescorer import ExpansionRescorer


@pytest.fixture(scope="module")
def data():
    d = load_pairs("coco500")
    return d.subset(None)


@pytest.fixture(scope="module")
def model(vocab):
    """A head with sparse-ish outputs: embedding-initialised, with a negative vocabulary bias."""
    torch.manual_seed(0)
    head = D2SHead(D2SHeadConfig(input_dim=512, hidden_dim=384), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(-1.5)  # ~2000 terms a vector, ~1.5 of a caption's own
    return D2S(head)


@pytest.fixture(scope="module")
def index(tmp_path_factory, model, data):
    path = tmp_path_factory.mktemp("idx") / "coco500.d2s"
    D2SImageIndexer(model, D2SIndex(path), verbose=False).index(data.corpus_iter())
    return D2SIndex(path)


def test_query_encoder_matches_head(model, data):
    topics = data.topics().head(5)
    out = model.query_encoder(expansion=True)(topics)
    assert list(out.columns) == ["qid", "query", "query_vec", "query_toks"]
    csr = model.head.encode(data.caption_vectors[:5])
    for i, toks in enumerate(out["query_toks"]):
        row = csr.getrow(i)
        assert toks == {
            model.vocab.tokens[j]: pytest.approx(float(w)) for j, w in zip(row.indices, row.data, strict=True)
        }
        assert all(w > 0 for w in toks.values())


def test_query_encoder_without_expansion_keeps_own_tokens(model, data):
    topics = data.topics().head(20)
    full = model.query_encoder(expansion=True)(topics)
    own = model.query_encoder(expansion=False)(topics)
    for text, f, o in zip(topics["query"], full["query_toks"], own["query_toks"], strict=True):
        own_tokens = set(model.vocab.decode(model.vocab.token_ids([text])[0]))
        assert set(o) <= own_tokens
        # the own-term path takes one dot product per token instead of the full projection: same to ~1e-7
        assert o == pytest.approx({t: w for t, w in f.items() if t in own_tokens}, rel=1e-5, abs=1e-5)


def test_query_encoder_empty_and_missing_columns(model):
    empty = pd.DataFrame(columns=["qid", "query", "query_vec"])
    out = model.query_encoder()(empty)
    assert len(out) == 0 and "query_toks" in out.columns
    with pytest.raises(ValueError, match="no query_vec column and this D2S model has no dense encoder"):
        model.query_encoder()(pd.DataFrame({"qid": ["1"], "query": ["a dog"]}))
    with pytest.raises(Exception, match="query"):
        model.query_encoder()(pd.DataFrame({"qid": ["1"]}))


def test_query_encoder_pruning(model, data):
    topics = data.topics().head(10)
    top = model.query_encoder(top_k=3)(topics)
    assert all(len(t) <= 3 for t in top["query_toks"])
    thr = model.query_encoder(min_weight=0.5)(topics)
    assert all(min(t.values(), default=1.0) > 0.5 for t in thr["query_toks"])


def test_pisa_scores_equal_exact_within_bound(model, index, data):
    topics = data.topics().head(50)
    enc = model.query_encoder(expansion=True)(topics)
    res = index.retriever(num_results=10, engine="pisa")(enc)
    fwd_rows = {d: i for i, d in enumerate(data.image_ids)}
    dvecs = model.head.encode(data.image_vectors)
    for qid, group in res.groupby("qid"):
        toks = enc.loc[enc.qid == qid, "query_toks"].iloc[0]
        qvec = np.zeros(len(model.vocab))
        for t, w in toks.items():
            qvec[model.vocab.token_to_id[t]] = w
        bound = index.engine("pisa").error_bound(toks)
        exact = dvecs[[fwd_rows[d] for d in group["docno"]]] @ qvec
        assert np.all(np.abs(group["score"].to_numpy() - exact) <= bound + 1e-9)


def test_rescorer_equals_brute_force_on_candidates(model, index, data):
    topics = data.topics().head(40)
    noexp = model.query_encoder(expansion=False)
    cands = (noexp >> index.retriever(num_results=20))(topics)
    res = ExpansionRescorer(model, index)(cands)
    q = model.head.encode(data.caption_vectors[:40])
    d = model.head.encode(data.image_vectors)
    row_of = {c: i for i, c in enumerate(data.caption_ids)}
    doc_of = {x: i for i, x in enumerate(data.image_ids)}
    for qid, group in res.groupby("qid", sort=False):
        cand_docs = cands.loc[cands.qid == qid, "docno"].tolist()
        assert sorted(group["docno"]) == sorted(cand_docs)  # same candidates, re-ordered
        exact = (d[[doc_of[x] for x in cand_docs]] @ q[row_of[qid]].T).toarray().ravel()
        expected = sorted(exact, reverse=True)
        np.testing.assert_allclose(
            group.sort_values("rank")["score"].to_numpy(), expected, rtol=1e-5, atol=1e-6
        )
        assert group.sort_values("rank")["rank"].tolist() == list(range(len(group)))


def test_rescorer_options_fallback_and_bad_input(model, index, data, monkeypatch):
    from pyterrier_d2s.index import MissingDependencyError
    from pyterrier_d2s.index.engines import taat

    topics = data.topics().head(12)
    cands = (model.query_encoder(expansion=False) >> index.retriever(num_results=15))(topics)
    reference = ExpansionRescorer(model, index)(cands)
    # query_toks passes through (the first stage's query) unless expanded_toks=True replaces it
    assert reference["query_toks"].tolist() == [
        cands.loc[cands.qid == q, "query_toks"].iat[0] for q in reference["qid"]
    ]
    with_toks = model.rescorer(index, expanded_toks=True)(cands)
    expanded = dict(
        zip(topics["qid"], model.query_encoder(expansion=True)(topics)["query_toks"], strict=True)
    )
    for qid, toks in zip(with_toks["qid"], with_toks["query_toks"], strict=True):
        assert toks.keys() == expanded[qid].keys()
        assert all(toks[t] == pytest.approx(w) for t, w in expanded[qid].items())
    pd.testing.assert_frame_equal(with_toks.drop(columns="query_toks"), reference.drop(columns="query_toks"))
    # rows of one query need not be contiguous: shuffled input, same ranking per query
    shuffled = ExpansionRescorer(model, index)(cands.sample(frac=1.0, random_state=3))
    for qid, group in reference.groupby("qid", sort=False):
        other = shuffled[shuffled.qid == qid]
        np.testing.assert_allclose(other["score"].to_numpy(), group["score"].to_numpy(), rtol=1e-6)
        assert other["rank"].tolist() == list(range(len(group)))

    # without numba the scipy path gives the same scores
    def no_numba(*args, **kwargs):
        raise MissingDependencyError("numba missing (test)")

    monkeypatch.setattr(taat, "rescore", no_numba)
    fallback = ExpansionRescorer(model, index)(cands)
    assert fallback["docno"].tolist() == reference["docno"].tolist()
    np.testing.assert_allclose(
        fallback["score"].to_numpy(), reference["score"].to_numpy(), rtol=1e-5, atol=1e-6
    )
    monkeypatch.undo()
    # columns: pt.inspect, empty frame, unknown docno
    rescorer = model.rescorer(index)
    assert pt.inspect.transformer_inputs(rescorer) == [["qid", "query", "docno"]]
    assert pt.inspect.transformer_outputs(rescorer, list(cands.columns)) == list(reference.columns)
    empty = rescorer(cands.head(0))
    assert len(empty) == 0 and list(empty.columns) == list(reference.columns)
    bad = cands.head(3).assign(docno=["no-such-image"] * 3)
    with pytest.raises(KeyError, match="no-such-image"):
        rescorer(bad)


def test_expanded_pisa_equals_exact_engine(model, index, data):
    topics = data.topics().head(30)
    enc = model.query_encoder()(topics)
    k = 5
    pisa = index.retriever(num_results=k, engine="pisa")(enc)
    exact = index.retriever(num_results=k, engine="exact")(enc)
    # exact engine == brute force over float vectors
    q = model.head.encode(data.caption_vectors[:30])
    d = model.head.encode(data.image_vectors)
    idx, val = sparse_top_k(q, d, k=k)
    for i, qid in enumerate(topics["qid"]):
        got = exact[exact.qid == qid].sort_values("rank")
        np.testing.assert_allclose(got["score"].to_numpy(), val[i][idx[i] >= 0], rtol=1e-5)
    # PISA agrees with exact on top-1 except where the two best are within the quantisation bound
    for qid, g in exact.groupby("qid"):
        p = pisa[pisa.qid == qid].sort_values("rank")
        bound = index.engine("pisa").error_bound(enc.loc[enc.qid == qid, "query_toks"].iloc[0])
        e = g.sort_values("rank")
        if p["docno"].iloc[0] != e["docno"].iloc[0]:
            assert e["score"].iloc[0] - e["score"].iloc[1] <= 2 * bound


def test_unknown_only_query_returns_nothing(model, index):
    frame = pd.DataFrame({"qid": ["x"], "query_toks": [{"[unused5]": 1.0}]})
    out = index.retriever(num_results=10)(frame)
    assert len(out) == 0 and {"qid", "docno", "score", "rank"} <= set(out.columns)


def test_duplicate_docnos_are_named(model, tmp_path, data):
    docs = list(data.corpus_iter())[:5]
    docs.append({**docs[2]})
    with pytest.raises(ValueError, match=repr(docs[2]["docno"])):
        D2SImageIndexer(model, D2SIndex(tmp_path / "dup"), verbose=False).index(docs)
    assert not D2SIndex(tmp_path / "dup").built()


def test_bad_doc_vec_named(model, tmp_path, data):
    docs = list(data.corpus_iter())[:3]
    docs[1] = {"docno": "bad", "doc_vec": np.full(512, np.nan, np.float32)}
    with pytest.raises(ValueError, match="'bad' has a NaN or inf doc_vec"):
        D2SImageIndexer(model, D2SIndex(tmp_path / "nan"), verbose=False).index(docs)
    with pytest.raises(ValueError, match="'x' has neither 'doc_vec' nor 'image'"):
        D2SImageIndexer(model, D2SIndex(tmp_path / "no"), verbose=False).index([{"docno": "x"}])


def test_index_reopens_through_artifact_api(index):
    import pyterrier_alpha as pta

    again = pta.Artifact.load(str(index.path))
    assert isinstance(again, D2SIndex) and len(again) == 500


def test_experiment_compares_dense_and_sparse(model, index, data, tmp_path):
    topics, qrels = data.topics().head(60), data.qrels()
    dense = dense_flex_index(tmp_path / "dense.flex", data.corpus_iter())
    exp, noexp = model.query_encoder(expansion=True), model.query_encoder(expansion=False)
    systems = [
        System("dense", dense.np_retriever(num_results=10)),
        System("d2s-expanded", exp >> index.retriever(num_results=10), exp),
        System(
            "d2s-noexp>>rescore", noexp >> index.retriever(num_results=10) >> model.rescorer(index), noexp
        ),
    ]
    # the pipelines also run inside pt.Experiment directly
    direct = pt.Experiment(
        [s.pipeline for s in systems], topics, qrels, [R @ 1, RR @ 10], names=[s.name for s in systems]
    )
    assert direct["name"].tolist() == ["dense", "d2s-expanded", "d2s-noexp>>rescore"]
    table = compare(systems, topics, qrels, index=index, reference="dense")
    assert table["name"].tolist() == [s.name for s in systems]
    np.testing.assert_allclose(table["R@1"].to_numpy(), direct["R@1"].to_numpy())
    # dense R@1 over these 60 captions from exact dot products
    scores = data.caption_vectors[:60] @ data.image_vectors.T
    assert table.loc[0, "R@1"] == pytest.approx(np.mean(scores.argmax(1) == data.caption_image[:60]))
    assert table.loc[0, "overlap@10"] == 1.0 and table.loc[0, "rho-R@1"] == pytest.approx(1.0)
    assert np.isnan(table.loc[0, "flops"]) and table.loc[1, "flops"] > 0
    assert table.loc[1, "d_nnz"] == pytest.approx(model.head.encode(data.image_vectors).nnz / 500)


def test_dense_hnsw_baseline_agrees_with_exact(data, tmp_path):
    pytest.importorskip("faiss")
    topics = data.topics().head(50)
    dense = dense_flex_index(tmp_path / "dense.flex", data.corpus_iter())
    exact = dense.np_retriever(num_results=1)(topics)
    hnsw = dense.faiss_hnsw_retriever(num_results=1, ef_search=64)(topics)
    agree = (
        exact.sort_values("qid")["docno"].to_numpy() == hnsw.sort_values("qid")["docno"].to_numpy()
    ).mean()
    assert agree >= 0.96  # approximate search, 500 vectors, ef_search 64


def test_query_flops_equals_pairwise_count(model, index, data):
    enc = model.query_encoder()(data.topics().head(25))
    q = model.head.encode(data.caption_vectors[:25])
    d = model.head.encode(data.image_vectors)
    brute = np.mean([[len(set(q[i].indices) & set(d[j].indices)) for j in range(500)] for i in range(25)])
    assert query_flops(list(enc["query_toks"]), index) == pytest.approx(brute)


def test_overlap_and_pearson_hand_computed():
    ref = pd.DataFrame({"qid": ["a"] * 3 + ["b"] * 3, "docno": list("xyzxyz"), "score": [3, 2, 1, 3, 2, 1]})
    run = pd.DataFrame({"qid": ["a"] * 3 + ["b"] * 3, "docno": list("xwzwvu"), "score": [3, 2, 1, 3, 2, 1]})
    ov = overlap_at_k(run, ref, k=2)
    assert ov["a"] == 0.5 and ov["b"] == 0.0
    qrels = pd.DataFrame({"qid": ["a", "b"], "docno": ["x", "y"], "label": [1, 1]})
    rho = per_query_pearson(run, ref, qrels, [RR @ 10])
    # RR: run a=1, b=0 ; ref a=1, b=0.5 -> perfectly correlated
    assert rho["RR@10"] == pytest.approx(1.0)


def test_bad_query_vectors_are_named_on_every_path(model, index, data):
    topics = data.topics().head(3)
    short = topics.copy()
    short["query_vec"] = [v[:100] for v in short["query_vec"]]
    for expansion in (True, False):
        with pytest.raises(ValueError, match=r"shape \(3, 100\), the head expects \(n, 512\)"):
            model.query_encoder(expansion=expansion)(short)
    cands = (model.query_encoder(expansion=False) >> index.retriever(num_results=5))(topics)
    cands_short = cands.copy()
    cands_short["query_vec"] = [v[:100] for v in cands_short["query_vec"]]
    with pytest.raises(ValueError, match=r"the head expects \(n, 512\)"):
        ExpansionRescorer(model, index)(cands_short)
    missing = topics.copy()
    missing["query_vec"] = [topics["query_vec"].iat[0], None, topics["query_vec"].iat[2]]
    with pytest.raises(ValueError, match=f"query {topics['qid'].iat[1]!r}: query_vec"):
        model.query_encoder()(missing)
    ragged = topics.copy()
    ragged["query_vec"] = [
        topics["query_vec"].iat[0],
        topics["query_vec"].iat[1][:7],
        topics["query_vec"].iat[2],
    ]
    with pytest.raises(ValueError, match=f"query {topics['qid'].iat[1]!r}: query_vec has shape"):
        model.query_encoder()(ragged)


def test_duplicate_qids_are_refused(model, data):
    topics = data.topics().head(3)
    twice = pd.concat([topics, topics.iloc[[1]]], ignore_index=True)
    with pytest.raises(ValueError, match=f"duplicate qid {topics['qid'].iat[1]!r}"):
        model.query_encoder()(twice)


def test_docno_with_a_nul_byte_is_refused(model, tmp_path, data):
    docs = list(data.corpus_iter())[:3]
    docs[1] = {**docs[1], "docno": "ab\x00cd"}
    with pytest.raises(ValueError, match="NUL byte"):
        D2SImageIndexer(model, D2SIndex(tmp_path / "x.d2s"), verbose=False).index(docs)
