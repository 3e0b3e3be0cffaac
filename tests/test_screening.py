"""Int8 screening of the vocabulary layer: never misses a positive logit, so the head's outputs are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyterrier_d2s.head import SCREEN_MAX_ROWS, D2SHead, D2SHeadConfig
from pyterrier_d2s.screening import Int8Screen


def _layer(rng, n_rows=2000, dim=64):
    weight = (rng.standard_normal((n_rows, dim)) * rng.uniform(0.01, 1.0, (n_rows, 1))).astype(np.float32)
    bias = rng.normal(-2.0, 1.0, n_rows).astype(np.float32)
    return weight, bias


def test_candidates_hold_every_positive_logit_against_brute_force():
    rng = np.random.default_rng(0)
    weight, bias = _layer(rng)
    rows = np.sort(rng.choice(len(weight), 1500, replace=False))
    screen = Int8Screen(weight, bias, rows)
    assert screen.q.dtype == np.int8 and screen.nbytes < weight[rows].nbytes / 3
    # the bound holds in float64 for every row: |w·h - s q·h| <= ||h|| ||e||
    h = rng.standard_normal(64).astype(np.float32) * 3
    exact = weight[rows].astype(np.float64) @ h + bias[rows]
    approx = (screen.q.astype(np.float64) * screen.scale[:, None]) @ h + bias[rows]
    assert (np.abs(exact - approx) <= np.linalg.norm(h) * screen.err_l2 + 1e-9).all()
    assert np.abs(weight[rows] - screen.q * screen.scale[:, None]).max() <= screen.max_weight_error() * (
        1 + 1e-6
    )
    for limit in (0.0, 0.5, 2.0):
        for _ in range(20):
            h = rng.standard_normal(64).astype(np.float32) * rng.uniform(0.1, 5)
            cand = screen.candidates(h, limit)
            exact = weight[rows].astype(np.float64) @ h + bias[rows]
            assert set(rows[exact > limit].tolist()) <= set(cand.tolist())
            assert set(cand.tolist()) <= set(rows.tolist()) and np.all(np.diff(cand) > 0)
            # the bound is tight enough to skip most rows that are far below the limit
            assert len(cand) < len(rows)


def test_logits_at_the_limit_are_kept():
    # a row whose logit is exactly at a float32 step above 0 must not be screened out
    rng = np.random.default_rng(1)
    weight, _ = _layer(rng, 200, 32)
    h = rng.standard_normal(32).astype(np.float32)
    logits = weight.astype(np.float64) @ h
    bias = (-logits + 1e-6).astype(np.float32)  # every logit ~ +1e-6
    exact = weight.astype(np.float64) @ h + bias
    cand = Int8Screen(weight, bias, np.arange(200)).candidates(h)
    assert set(np.flatnonzero(exact > 0).tolist()) <= set(cand.tolist())


@pytest.fixture(scope="module")
def sparse_head(vocab):
    torch.manual_seed(4)
    head = D2SHead(D2SHeadConfig(input_dim=16, hidden_dim=48, init="random"), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.weight.normal_(0, 0.3)
        head.vocab_proj.bias.normal_(-6.0, 1.0)  # a few hundred positive outputs per row, as a trained head
    return head


def test_screened_encoding_equals_the_float32_projection(sparse_head):
    head = sparse_head
    z = np.random.default_rng(2).standard_normal((SCREEN_MAX_ROWS + 3, 16)).astype(np.float32)
    with torch.no_grad():
        dense = head(torch.from_numpy(z)).numpy()
    assert 20 < (dense > 0).sum(axis=1).mean() < 2000
    full = head.encode(z, screen=False)
    for kwargs in ({}, {"top_k": 5}, {"threshold": 0.3}, {"columns": np.arange(0, 30522, 3)}):
        a = head.encode(z, screen=False, **kwargs)
        b = head.encode(z, screen=True, **kwargs)
        assert (a != 0).toarray().tolist() == (b != 0).toarray().tolist(), kwargs
        np.testing.assert_allclose(b.toarray(), a.toarray(), rtol=1e-5, atol=1e-5)
        assert b.has_sorted_indices
    np.testing.assert_allclose(full.toarray(), dense, rtol=1e-5, atol=1e-5)
    # automatic: one query at a time is screened, and gives the same rows as the batch
    one = head.encode(z[:1])
    np.testing.assert_allclose(one.toarray(), full[:1].toarray(), rtol=1e-5, atol=1e-5)
    assert head._screens(None, 1, None, torch.device("cpu"))
    assert not head._screens(None, SCREEN_MAX_ROWS + 1, None, torch.device("cpu"))
    assert not head._screens(None, 1, [np.array([5])], torch.device("cpu"))


def test_screen_follows_weight_updates_and_output_tokens(sparse_head):
    head = sparse_head
    z = np.random.default_rng(3).standard_normal((1, 16)).astype(np.float32)
    before = head.encode(z, screen=True)
    with torch.no_grad():
        head.vocab_proj.bias += 1.0
    try:
        moved = head.encode(z, screen=True)
        np.testing.assert_allclose(
            moved.toarray(), head.encode(z, screen=False).toarray(), rtol=1e-5, atol=1e-5
        )
        assert moved.nnz > before.nnz
    finally:
        with torch.no_grad():
            head.vocab_proj.bias -= 1.0
    allowed = np.flatnonzero(before.toarray()[0] > 0)[::2]
    head.set_output_tokens(allowed)
    try:
        assert set(head.encode(z, screen=True).indices.tolist()) == set(allowed.tolist())
    finally:
        head.set_output_tokens(None)


def test_bad_screen_requests_are_refused(sparse_head):
    z = np.zeros((1, 16), np.float32)
    with pytest.raises(ValueError, match="screen=True needs expanded rows"):
        sparse_head.encode(z, own_token_ids=[np.array([2000])], screen=True)


def test_project_equals_brute_force_on_every_row_or_a_subset():
    rng = np.random.default_rng(3)
    weight, bias = _layer(rng, 3000, 48)
    rows = np.sort(rng.choice(3000, 2500, replace=False))  # 500 ids are never screened (not allowed)
    screen = Int8Screen(weight, bias, rows)
    for threshold in (0.0, 0.4):
        for _ in range(10):
            h = (rng.standard_normal(48) * rng.uniform(0.5, 4)).astype(np.float32)
            logits = weight.astype(np.float64) @ h + bias
            weights = np.log1p(np.maximum(logits, 0))
            want = rows[weights[rows] > threshold]
            ids, vals = screen.project(h, weight, bias, threshold)
            assert len(want) > 5 and ids.tolist() == want.tolist()  # ascending, nothing missed or added
            np.testing.assert_allclose(vals, weights[ids], rtol=1e-5, atol=2e-5)  # float32 sums
            subset = np.sort(rng.choice(3000, 400, replace=False))
            ids, vals = screen.project(h, weight, bias, threshold, columns=subset)
            assert ids.tolist() == [j for j in want.tolist() if j in set(subset.tolist())]
            np.testing.assert_allclose(vals, weights[ids], rtol=1e-5, atol=2e-5)  # float32 sums


def test_a_head_in_float64_is_not_screened(sparse_head):
    head = D2SHead(D2SHeadConfig(input_dim=16, hidden_dim=48, init="random"), vocab=sparse_head.vocab).double()
    assert not head._screens(None, 1, None, torch.device("cpu"))
    with pytest.raises(ValueError, match="float32 head"):
        head._screens(True, 1, None, torch.device("cpu"))
