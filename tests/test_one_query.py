"""One query at a time: the int8-screened encoding, the index-restricted query encoder and the fused
"rescorer % k" give the same rankings as the batch paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pyterrier_d2s import D2S, D2SIndex
from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.image_indexer import D2SImageIndexer


@pytest.fixture(scope="module")
def data():
    return load_pairs("coco500").subset(None)


@pytest.fixture(scope="module")
def model(vocab):
    torch.manual_seed(5)
    head = D2SHead(D2SHeadConfig(input_dim=512, hidden_dim=384), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(-1.5)
    return D2S(head)


@pytest.fixture(scope="module")
def index(tmp_path_factory, model, data):
    path = tmp_path_factory.mktemp("idx1") / "coco500.d2s"
    D2SImageIndexer(model, D2SIndex(path), verbose=False).index(data.corpus_iter())
    return D2SIndex(path)


def _rankings(frame: pd.DataFrame) -> dict[str, list[str]]:
    return {q: g.sort_values("rank")["docno"].tolist() for q, g in frame.groupby("qid", sort=False)}


def _scores(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    return dict(zip(zip(frame["qid"], frame["docno"], strict=True), frame["score"], strict=True))


def test_one_row_frames_rank_as_the_batch(model, index, data):
    topics = data.topics().head(12).reset_index(drop=True)
    batch = (model.query_encoder() >> index.retriever(num_results=10))(topics)  # float32 projection
    for pipe in (
        model.query_encoder() >> index.retriever(num_results=10),  # screened, one row at a time
        model.query_encoder(index=index) >> index.retriever(num_results=10),
    ):
        singles = pd.concat([pipe(topics.iloc[i : i + 1]) for i in range(len(topics))], ignore_index=True)
        assert list(singles.columns) == list(batch.columns)
        assert _rankings(singles) == _rankings(batch)
        got, want = _scores(singles), _scores(batch)
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5)


def test_index_restricted_encoder_keeps_only_indexed_tokens(model, index, data):
    topics = data.topics().head(3)
    full = model.query_encoder()(topics)["query_toks"]
    restricted = model.query_encoder(index=index)(topics)["query_toks"]
    fwd = index.forward()
    terms = {t for t, col in fwd.term_index.items() if fwd.doc_freq[col] > 0}  # some image has the token
    assert 0 < len(terms) < len(model.vocab)
    for f, r in zip(full, restricted, strict=True):
        assert set(r) == {t for t in f if t in terms}
        np.testing.assert_allclose([r[t] for t in r], [f[t] for t in r], rtol=1e-5)
    with pytest.raises(ValueError, match="index or top_k"):
        model.query_encoder(index=index, top_k=5)


def test_fused_rank_cutoff_of_the_rescorer_equals_the_cutoff(model, index, data):
    topics = data.topics().head(6)
    first = model.query_encoder(expansion=False) >> index.retriever(num_results=50)
    rescorer = model.rescorer(index)
    fused = rescorer.fuse_rank_cutoff(5)
    assert fused.num_results == 5 and rescorer.fuse_rank_cutoff(100) is not None
    assert fused.fuse_rank_cutoff(7) is None  # a looser cut of a cut is the same cut
    candidates = first(topics)
    want = (rescorer % 5)(candidates)
    got = fused(candidates)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    assert (got.groupby("qid")["rank"].max() == 4).all()
    compiled = ((first >> rescorer) % 5).compile()
    pd.testing.assert_frame_equal(compiled(topics).reset_index(drop=True), want.reset_index(drop=True))
    with pytest.raises(ValueError, match="num_results"):
        model.rescorer(index).__class__(model, index, num_results=-1)


def _brute_force_rescored(model, index, topics, depth, k):
    """Own-token retrieval to ``depth``, then each candidate scored with the float32 expanded query (dense)."""
    fwd = index.forward()
    dense = fwd.matrix.toarray().astype(np.float64)
    col_of = {t: i for i, t in enumerate(fwd.terms.tolist())}
    first = (model.query_encoder(expansion=False) >> index.retriever(num_results=depth))(topics)
    vecs = np.stack(topics["query_vec"].tolist())
    expanded = model.head.encode(vecs, screen=False).toarray()
    out = {}
    for qid, group in first.groupby("qid", sort=False):
        row = expanded[list(topics["qid"]).index(qid)]
        qvec = np.zeros(dense.shape[1])
        for j in np.flatnonzero(row):
            token = model.vocab.tokens[j]
            if token in col_of:
                qvec[col_of[token]] = row[j]
        scores = {d: float(dense[fwd.docno_index[d]] @ qvec) for d in group["docno"]}
        out[qid] = sorted(scores, key=lambda d: -scores[d])[:k]
    return out


def test_compiled_pipelines_are_one_stage_with_the_same_frames(model, index, data):
    """.compile() fuses encoder >> retriever (>> re-scorer): the same frames, columns and dtypes, for one row,
    several rows, a query without hits and an empty frame; the re-scored rankings equal brute force."""
    topics = data.topics().head(8).reset_index(drop=True)
    no_hits = topics.iloc[:1].assign(qid="none", query="zzzz", query_vec=[np.zeros(512, np.float32)])
    pipelines = {
        "expanded": model.query_encoder() >> index.retriever(num_results=10),
        "restricted": model.query_encoder(index=index) >> index.retriever(num_results=10),
        "rescored": (
            model.query_encoder(expansion=False) >> index.retriever(num_results=40) >> model.rescorer(index)
        )
        % 5,
        "rescored with expanded toks": model.query_encoder(expansion=False)
        >> index.retriever(num_results=40)
        >> model.rescorer(index, expanded_toks=True),
    }
    for name, pipe in pipelines.items():
        compiled = pipe.compile()
        stages = [type(compiled).__name__]
        assert stages[0] in ("EncodedRetriever", "RetrieveRescore"), (name, compiled)
        for frame in (topics.iloc[:1], topics.iloc[3:4], topics, no_hits, topics.iloc[:0]):
            want, got = pipe(frame), compiled(frame)
            pd.testing.assert_frame_equal(
                got.reset_index(drop=True), want.reset_index(drop=True), check_exact=False, rtol=1e-5
            )
        assert compiled.transform_outputs(list(topics.columns)) == list(want.columns), name
    got = pipelines["rescored"].compile()
    assert len(got(topics)["qid"].unique()) >= len(topics) // 2  # most queries have candidates
    for i in range(len(topics)):  # one query at a time: the screen visits only the candidates' tokens
        one = got(topics.iloc[i : i + 1])
        want = _brute_force_rescored(model, index, topics.iloc[i : i + 1], 40, 5)
        assert one["docno"].tolist() == want.get(topics["qid"][i], [])
