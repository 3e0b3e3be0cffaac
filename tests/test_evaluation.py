import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pyterrier_d2s.evaluation import dense_top_k, run_frame, sparse_top_k
from pyterrier_d2s.measures import exact_at_k, flops, mean_nnz, retrieval_metrics, semantic_at_k


def random_sparse(n, v, density, seed):
    return sp.random(n, v, density=density, format="csr", random_state=seed, dtype=np.float32)


def test_flops_equals_brute_force_pair_count():
    q, d = random_sparse(7, 40, 0.2, 1), random_sparse(9, 40, 0.3, 2)
    brute = np.mean([[len(set(q[i].indices) & set(d[j].indices)) for j in range(9)] for i in range(7)])
    assert flops(q, d) == pytest.approx(brute)


def test_flops_hand_computed():
    q = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]]))
    d = sp.csr_matrix(np.array([[1.0, 0.0, 3.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    # overlaps: q0: 1,2,0 ; q1: 0,1,0 -> 4 / 6
    assert flops(q, d) == pytest.approx(4 / 6)
    assert mean_nnz(d) == pytest.approx(5 / 3)


def test_exact_at_k_hand_computed():
    w = sp.csr_matrix(np.array([[0.9, 0.8, 0.0, 0.7, 0.1], [0.0, 0.0, 0.0, 0.0, 0.5]]))
    own = [np.array([1, 2, 4]), np.array([4])]
    # row 0 top-2 = {0, 1}: 1 in caption -> 1/2 ; row 1 top-2 = {4} -> 1/2
    assert exact_at_k(w, own, k=2) == pytest.approx(0.5)
    # row 0 top-4 = {0,1,3,4}: {1,4} -> 2/4 ; row 1 -> 1/4
    assert exact_at_k(w, own, k=4) == pytest.approx((0.5 + 0.25) / 2)


def test_semantic_at_k_hand_computed():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    w = sp.csr_matrix(np.array([[0.0, 0.2, 0.9, 0.5]]))
    own = [np.array([0])]
    # top-2 = {2, 3}; cos(e2, e0) = 1/sqrt(2), cos(e3, e0) = 1 -> (0.7071 + 1) / 2
    assert semantic_at_k(w, own, emb, k=2) == pytest.approx((1 / np.sqrt(2) + 1) / 2)
    # a top term identical to a caption term counts 1; k larger than the non-zeros divides by k
    assert semantic_at_k(sp.csr_matrix(np.array([[0.0, 0.0, 0.0, 0.5]])), own, emb, k=4) == pytest.approx(
        0.25
    )


def test_sparse_top_k_equals_brute_force():
    q, d = random_sparse(20, 60, 0.15, 3), random_sparse(50, 60, 0.15, 4)
    idx, val = sparse_top_k(q, d, k=5, batch_size=7)
    full = (q @ d.T).toarray()
    for i in range(20):
        positive = np.flatnonzero(full[i] > 0)
        expected = positive[np.argsort(-full[i, positive], kind="stable")][:5]
        got = idx[i][idx[i] >= 0]
        np.testing.assert_allclose(full[i, got], full[i, expected], rtol=1e-6)
        np.testing.assert_allclose(val[i][: len(got)], full[i, got], rtol=1e-6)
        assert len(got) == len(expected)


def test_dense_top_k_orders_by_dot_product():
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    d = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]], np.float32)
    idx, val = dense_top_k(q, d, k=2)
    assert idx.tolist() == [[0, 2], [1, 2]]
    np.testing.assert_allclose(val, [[0.9, 0.5], [0.9, 0.5]])


def test_retrieval_metrics_hand_computed():
    qrels = pd.DataFrame({"qid": ["q1", "q2", "q3"], "docno": ["d0", "d1", "d1"], "label": 1})
    idx = np.array([[0, 1], [0, 1], [-1, -1]])  # q3 retrieves nothing
    val = np.array([[2.0, 1.0], [2.0, 1.0], [0.0, 0.0]])
    run = run_frame(["q1", "q2", "q3"], ["d0", "d1"], idx, val)
    assert list(run.columns) == ["qid", "docno", "score", "rank"]
    assert len(run) == 4
    m = retrieval_metrics(run, qrels)
    # q1 found at rank 1, q2 at rank 2, q3 missing -> R@1 = 1/3, R@5 = 2/3, RR@10 = (1 + 0.5) / 3
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@5"] == pytest.approx(2 / 3)
    assert m["RR@10"] == pytest.approx(0.5)


def test_run_frame_empty():
    run = run_frame([], [], np.zeros((0, 3), np.int64), np.zeros((0, 3)))
    assert list(run.columns) == ["qid", "docno", "score", "rank"] and len(run) == 0
    assert isinstance(run, pd.DataFrame)


def test_image_exact_uses_every_caption_of_an_image(vocab):
    import numpy as np
    import scipy.sparse as sp

    from pyterrier_d2s.data import PairedVectors
    from pyterrier_d2s.evaluation import image_own_ids
    from pyterrier_d2s.measures import exact_at_k

    class _Head:
        pass

    head = _Head()
    head.vocab = vocab
    data = PairedVectors(
        image_ids=["i0", "i1"],
        image_vectors=np.zeros((2, 2), np.float32),
        caption_ids=["c0", "c1", "c2"],
        caption_texts=["a dog", "a red dog", "a cat"],
        caption_image=np.array([0, 0, 1]),
        caption_vectors=np.zeros((3, 2), np.float32),
    )
    ids = image_own_ids(head, data)
    assert [sorted(vocab.decode(i)) for i in ids] == [["a", "dog", "red"], ["a", "cat"]]
    ids5 = image_own_ids(head, data, {"i1": ["a cat on a mat", "two dogs"]})
    assert sorted(vocab.decode(ids5[1])) == ["a", "cat", "dogs", "mat", "on", "two"]
    # an image whose top terms are "cat dogs zebra": 2 of its captions' words in its top 20 -> 2/20
    t = vocab.token_to_id
    d = sp.csr_matrix(
        ([3.0, 2.0, 1.0], ([0, 0, 0], [t["cat"], t["dogs"], t["zebra"]])), shape=(1, len(vocab))
    )
    assert exact_at_k(d, [ids5[1]], 20) == pytest.approx(2 / 20)
