"""Small frames from column arrays: the same frames as pandas' public constructors, on either path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pyterrier_d2s import frames
from pyterrier_d2s.index.results import query_groups


def _query_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "qid": ["q1", "q2"],
            "query": ["a dog", "two cats"],
            "query_vec": [np.ones(3, np.float32), np.zeros(3, np.float32)],
            "n": [3, 4],
        },
        index=[7, 9],
    )


@pytest.mark.parametrize("fast", [True, False])
def test_frames_from_arrays_equal_the_public_constructors(monkeypatch, fast):
    monkeypatch.setattr(frames, "_FAST", fast)
    inp = _query_frame()
    cols = frames.column_arrays(inp)
    assert list(cols) == list(inp.columns)
    toks = [{"dog": 1.5}, {"cat": 0.5, "two": 0.25}]
    cols["query_toks"] = frames.object_array(toks)
    got = frames.frame_from_arrays(cols, inp.index)
    pd.testing.assert_frame_equal(got, inp.assign(query_toks=toks))
    pos = np.array([1, 1, 0])
    taken = {c: a.take(pos) for c, a in cols.items()}
    taken["score"] = np.array([3.0, 2.0, 1.0])
    got = frames.frame_from_arrays(taken, 3)
    want = inp.iloc[pos].reset_index(drop=True).assign(query_toks=[toks[1], toks[1], toks[0]], score=[3.0, 2, 1])
    pd.testing.assert_frame_equal(got, want)
    with pytest.raises(ValueError, match="lengths"):
        frames.frame_from_arrays({"a": np.zeros(2), "b": np.zeros(3)}, 2)


def test_object_array_keeps_one_dimension():
    vecs = [np.ones(3), np.zeros(3)]
    arr = frames.object_array(vecs)
    assert arr.shape == (2,) and arr.dtype == object and arr[1] is vecs[1]


def test_query_groups_of_small_and_large_frames_agree():
    rng = np.random.default_rng(0)
    qids = pd.Series(rng.choice([f"q{i}" for i in range(30)], 2500))
    codes = pd.factorize(qids, sort=False)[0]
    first = np.unique(codes, return_index=True)[1]
    for series in (qids.iloc[:7], qids.iloc[:900], qids):  # small (dict) and large (pandas) paths
        got_codes, got_first = query_groups(series)
        want_codes = pd.factorize(series, sort=False)[0]
        np.testing.assert_array_equal(got_codes, want_codes)
        np.testing.assert_array_equal(got_first, np.unique(want_codes, return_index=True)[1])
    assert len(first) == 30


def test_columns_of_rows_is_the_union_of_the_rows_terms():
    import scipy.sparse as sp

    from pyterrier_d2s.index.forward import ForwardStore

    m = sp.random(50, 40, density=0.1, random_state=np.random.default_rng(1), format="csr", dtype=np.float32)
    store = ForwardStore(m, np.array([f"t{i}" for i in range(40)]), np.array([f"d{i}" for i in range(50)]))
    for rows in (np.array([3]), np.array([9, 2, 9, 40]), np.arange(50), np.zeros(0, np.int64)):
        want = sorted({int(j) for r in rows for j in m.indices[m.indptr[r] : m.indptr[r + 1]]})
        assert store.columns_of_rows(rows).tolist() == want
