"""Property-based tests (hypothesis): readers, query encoders and result frames on arbitrary input.

Each either returns the right thing (checked against an independent computation) or raises a clear
``DataError``/``ValueError``/``TypeError`` — never another exception, never a wrong result.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyterrier_d2s.data import DataError, load_pairs
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.model import D2S

EXAMPLES = 40
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ids = st.text(min_size=1, max_size=12)
texts = st.text(max_size=40)


@SETTINGS
@given(
    image_ids=st.lists(ids, min_size=1, max_size=6),
    captions=st.lists(st.tuples(ids, texts, st.integers(0, 7)), min_size=1, max_size=8),
    dim=st.integers(0, 5),
    dtype=st.sampled_from(["float32", "float64", "float16", "int32"]),
    poison=st.sampled_from([None, np.nan, np.inf]),
)
def test_vectors_dir_reader(tmp_path_factory, image_ids, captions, dim, dtype, poison):
    d = tmp_path_factory.mktemp("v")
    with open(d / "images.jsonl", "w", encoding="utf-8") as f:
        for i in image_ids:
            f.write(json.dumps({"image_id": i}) + "\n")
    with open(d / "captions.jsonl", "w", encoding="utf-8") as f:
        for cid, text, img in captions:
            f.write(
                json.dumps({"caption_id": cid, "image_id": image_ids[img % len(image_ids)], "caption": text})
                + "\n"
            )
    rng = np.random.default_rng(0)
    iv = rng.normal(size=(len(image_ids), dim)).astype(dtype)
    cv = rng.normal(size=(len(captions), dim)).astype(dtype)
    if poison is not None and dim and np.issubdtype(cv.dtype, np.floating):
        cv[0, 0] = poison
    np.save(d / "image_vectors.npy", iv)
    np.save(d / "caption_vectors.npy", cv)
    try:
        data = load_pairs(d)
    except DataError as e:
        assert str(e)  # a message, naming something
        return
    # accepted: then it is exactly the input, and it is valid
    assert data.image_ids == [str(i) for i in image_ids] and len(set(image_ids)) == len(image_ids)
    assert data.caption_texts == [t for _, t, _ in captions] and all(t.strip() for _, t, _ in captions)
    assert dim > 0 and data.image_vectors.dtype == np.float32 and np.isfinite(data.caption_vectors).all()
    np.testing.assert_array_equal(data.caption_vectors, cv.astype(np.float32))
    expected_links = [image_ids.index(image_ids[img % len(image_ids)]) for _, _, img in captions]
    assert data.caption_image.tolist() == expected_links


@pytest.fixture(scope="module")
def model(vocab):
    torch.manual_seed(0)
    head = D2SHead(D2SHeadConfig(input_dim=6, hidden_dim=16, init="random"), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(0.1)
    return D2S(head)


@SETTINGS
@given(
    queries=st.lists(texts, min_size=1, max_size=5),
    expansion=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_query_encoder_on_any_text(model, queries, expansion, seed):
    vecs = np.random.default_rng(seed).normal(size=(len(queries), 6)).astype(np.float32)
    frame = pd.DataFrame(
        {"qid": [f"q{i}" for i in range(len(queries))], "query": queries, "query_vec": list(vecs)}
    )
    out = model.query_encoder(expansion=expansion)(frame)
    own = model.vocab.token_ids(queries)
    full = model.head.encode(vecs)
    for i, toks in enumerate(out["query_toks"]):
        assert all(np.isfinite(w) and w > 0 for w in toks.values())
        ids_ = np.array(sorted(model.vocab.token_to_id[t] for t in toks), dtype=np.int64)
        row = full[i]
        expected = row.indices if expansion else np.intersect1d(row.indices, own[i])
        np.testing.assert_array_equal(ids_, np.sort(expected))  # the same terms as the head's full output
        dense_row = row.toarray().ravel()
        for t, w in toks.items():
            assert w == pytest.approx(float(dense_row[model.vocab.token_to_id[t]]), rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    rng = np.random.default_rng(1)
    m = sp.random(40, 12, density=0.3, random_state=rng, dtype=np.float32, format="csr")
    m.data = (m.data + 0.05).astype(np.float32)
    terms = [f"t{i}" for i in range(12)]
    return (
        D2SIndex(tmp_path_factory.mktemp("i") / "x.d2s", verbose=False).index_matrix(
            [f"d{i}" for i in range(40)], m, terms
        ),
        m,
        terms,
    )


weights = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3))
toks = st.dictionaries(
    st.one_of(st.sampled_from([f"t{i}" for i in range(12)]), st.text(max_size=5)), weights, max_size=6
)


@SETTINGS
@given(
    queries=st.lists(toks, min_size=1, max_size=4),
    k=st.integers(1, 50),
    engine=st.sampled_from(["taat", "exact"]),
)
def test_result_frames_equal_brute_force(small_index, queries, k, engine):
    index, m, terms = small_index
    frame = pd.DataFrame({"qid": [f"q{i}" for i in range(len(queries))], "query_toks": queries})
    known = [{t: float(w) for t, w in q.items() if t in terms} for q in queries]
    if any(not abs(w) <= 1e15 for q in known for w in q.values()):
        with pytest.raises(ValueError, match="not finite or above"):
            index.retriever(num_results=k, engine=engine)(frame)
        return
    res = index.retriever(num_results=k, engine=engine)(frame)
    assert set(res.columns) >= {"qid", "docno", "score", "rank"}
    for i, q in enumerate(known):
        vec = np.zeros(len(terms), np.float64)
        for t, w in q.items():
            if w > 0:  # the engines take query weights as float32 (a 1e-311 weight is 0 there)
                vec[terms.index(t)] += float(np.float32(w))
        scores = m.astype(np.float64) @ vec
        got = res[res["qid"] == f"q{i}"].sort_values("rank")
        assert got["rank"].tolist() == list(range(len(got)))
        positive = np.flatnonzero(scores > 0)
        # documents sharing no term are not returned; a score below float32's smallest normal number (a
        # 1e-38 query weight) may count as 0 (the taat engine's floor), the exact engine keeps it
        normal = np.flatnonzero(scores >= np.finfo(np.float32).tiny)
        assert min(k, len(normal)) <= len(got) <= min(k, len(positive))
        np.testing.assert_allclose(
            got["score"].to_numpy(), np.sort(scores[positive])[::-1][: len(got)], rtol=1e-5
        )
        for docno, score in zip(got["docno"], got["score"], strict=True):
            assert scores[int(docno[1:])] == pytest.approx(score, rel=1e-5)
