import json

import numpy as np
import pytest
import torch

from pyterrier_d2s.head import D2SHead, D2SHeadConfig, load_word_embeddings


@pytest.fixture(scope="module")
def head(vocab):
    torch.manual_seed(1)
    return D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=384), vocab=vocab)


def reference_forward(head, z):
    """Eq. 4-5 written out with plain tensor ops."""
    z1 = z @ head.proj.weight.T + head.proj.bias
    mu = z1.mean(-1, keepdim=True)
    var = z1.var(-1, unbiased=False, keepdim=True)
    z2 = (z1 - mu) / torch.sqrt(var + head.config.layer_norm_eps) * head.norm.weight + head.norm.bias
    s = z2 @ head.vocab_proj.weight.T + head.vocab_proj.bias
    out = torch.log(1 + torch.clamp(s, min=0))
    out[:, torch.from_numpy(head.vocab.special_mask)] = 0
    return out


def test_forward_matches_equations(head):
    z = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(head(z), reference_forward(head, z), atol=1e-5, rtol=1e-5)
    # the training path (custom backward) computes the same values
    z.requires_grad_(True)
    torch.testing.assert_close(head(z).detach(), reference_forward(head, z).detach(), atol=1e-5, rtol=1e-5)


def test_special_tokens_never_get_weight(head):
    with torch.no_grad():
        s = head(torch.randn(64, 8) * 10)
    assert (s[:, torch.from_numpy(head.vocab.special_mask)] == 0).all()
    assert (s >= 0).all() and (s > 0).any()


def test_w2_initialised_from_vocabulary_embeddings(head):
    emb = load_word_embeddings()
    assert emb.shape == (30522, 384)
    torch.testing.assert_close(head.vocab_proj.weight.detach(), emb)
    assert (head.vocab_proj.bias == 0).all()


def test_custom_backward_equals_autograd(vocab):
    torch.manual_seed(3)
    head = D2SHead(D2SHeadConfig(input_dim=6, hidden_dim=16, init="random"), vocab=vocab).double()
    z = torch.randn(7, 6, dtype=torch.float64)
    mask = (torch.rand(7, 30522) > 0.5).double()
    out = head(z, mask=mask)
    weights = torch.rand_like(out)
    (out * weights).sum().backward()
    grads = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    ref = reference_forward(head, z) * mask
    (ref * weights).sum().backward()
    for g, p in zip(grads, head.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_save_load_round_trip(tmp_path, head):
    head.save_pretrained(tmp_path / "h")
    files = sorted(p.name for p in (tmp_path / "h").iterdir())
    assert files == ["config.json", "model.safetensors", "vocab.txt"]
    cfg = json.loads((tmp_path / "h" / "config.json").read_text())
    assert cfg["input_dim"] == 8 and cfg["type"] == "d2s_head"
    again = D2SHead.from_pretrained(tmp_path / "h")
    z = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(z), head(z), rtol=0, atol=0)
    assert again.config == head.config


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        D2SHead.from_pretrained(tmp_path)


def test_dimension_mismatch_is_reported(head):
    with pytest.raises(ValueError, match="dim 9, the head expects 8"):
        head(torch.randn(2, 9))


def test_encode_expansion_topk_threshold(head):
    z = np.random.RandomState(0).randn(3, 8).astype(np.float32)
    full = head.encode(z)
    with torch.no_grad():
        dense = head(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(full.toarray(), dense, atol=1e-6)
    assert full.nnz == int((dense > 0).sum()) and full.has_sorted_indices  # no explicit zeros stored
    assert (head.encode(z, threshold=-1.0) != full).nnz == 0  # weights are >= 0: a negative threshold is 0
    own = [np.array([2000, 3899]), np.array([], dtype=np.int64), np.array([3899])]
    noexp = head.encode(z, own_token_ids=own)
    for r, ids in enumerate(own):
        row = noexp.getrow(r)
        assert set(row.indices) <= set(ids)
        np.testing.assert_allclose(row.toarray()[0, ids], dense[r, ids] * (dense[r, ids] > 0), atol=1e-6)
    top = head.encode(z, top_k=5)
    assert (np.diff(top.indptr) <= 5).all()
    for r in range(3):
        np.testing.assert_allclose(np.sort(top.getrow(r).data)[::-1], np.sort(dense[r])[::-1][:5], atol=1e-6)
    thr = head.encode(z, threshold=0.5)
    assert (thr.data > 0.5).all()
    assert thr.nnz == int((dense > 0.5).sum())


def test_own_term_encoding_equals_the_masked_full_projection(head):
    # the unexpanded path computes only the own tokens' dot products; it must equal masking the full output
    rng = np.random.RandomState(1)
    z = rng.randn(40, 8).astype(np.float32)
    own = [rng.choice(np.arange(1000, 30000), size=rng.randint(0, 12), replace=False) for _ in range(40)]
    with torch.no_grad():
        dense = head(torch.from_numpy(z)).numpy()
    expected = np.zeros_like(dense)
    for r, ids in enumerate(own):
        expected[r, ids] = dense[r, ids]
    got = head.encode(z, own_token_ids=own, batch_size=16)
    np.testing.assert_allclose(got.toarray(), expected, atol=1e-5)
    assert (got.data > 0).all()
    top2 = head.encode(z, own_token_ids=own, top_k=2, threshold=0.01)
    for r in range(40):
        want = np.sort(expected[r][expected[r] > 0.01])[::-1][:2]
        np.testing.assert_allclose(np.sort(top2.getrow(r).data)[::-1], want, atol=1e-5)


def test_encode_restricted_to_columns_equals_masked_full_output(head):
    rng = np.random.RandomState(2)
    z = rng.randn(30, 8).astype(np.float32)
    with torch.no_grad():
        dense = head(torch.from_numpy(z)).numpy()
    columns = np.sort(rng.choice(np.arange(head.config.vocab_size), size=3000, replace=False))
    expected = np.zeros_like(dense)
    expected[:, columns] = dense[:, columns]
    got = head.encode(z, columns=columns[::-1], batch_size=7)  # any order; batches share the gathered rows
    np.testing.assert_allclose(got.toarray(), expected, atol=1e-5)
    assert got.nnz == int((expected > 0).sum()) and got.has_sorted_indices
    top3 = head.encode(z, columns=columns, top_k=3)
    for r in range(30):
        np.testing.assert_allclose(np.sort(top3.getrow(r).data), np.sort(expected[r])[-3:], atol=1e-5)
    # the gathered rows follow the weights: after an in-place update the output changes with them
    with torch.no_grad():
        head.vocab_proj.bias[columns] += 0.25
    try:
        with torch.no_grad():
            moved = head(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(
            head.encode(z, columns=columns).toarray()[:, columns], moved[:, columns], atol=1e-5
        )
    finally:
        with torch.no_grad():
            head.vocab_proj.bias[columns] -= 0.25
    with pytest.raises(ValueError, match="not both"):
        head.encode(z[:2], own_token_ids=[np.array([5]), np.array([6])], columns=columns)
    with pytest.raises(ValueError, match="vocabulary ids"):
        head.encode(z[:2], columns=np.array([head.config.vocab_size]))


def test_restricted_head_encodes_only_its_tokens_with_the_same_weights(vocab):
    torch.manual_seed(3)
    head = D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=16, init="random"), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(0.2)
    allowed = np.sort(
        np.random.default_rng(0).choice(np.flatnonzero(~vocab.special_mask), 500, replace=False)
    )
    head.set_output_tokens(allowed)
    z = torch.randn(6, 8)
    assert head._restricted_columns() is not None and len(head._restricted_columns()) == 500
    with torch.no_grad():
        expected = head(z).numpy()  # the full |V|-wide projection, masked
    for top_k in (None, 7):
        got = head.encode(z, top_k=top_k).toarray()
        if top_k is None:
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        else:
            assert (np.count_nonzero(got, axis=1) == 7).all()
            for r in range(6):  # the 7 largest of the full output
                np.testing.assert_allclose(np.sort(got[r][got[r] > 0]), np.sort(expected[r])[-7:], rtol=1e-6)
    assert set(np.flatnonzero(head.encode(z).toarray().any(axis=0))) <= set(allowed.tolist())
    head.set_output_tokens(None)
    assert head._restricted_columns() is None


def test_fingerprint_is_cached_until_a_weight_changes(vocab):
    head = D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=16, init="random"), vocab=vocab)
    first = head.fingerprint()
    assert head.fingerprint() == first
    original = head.vocab_proj.bias.detach().clone()
    with torch.no_grad():
        head.vocab_proj.bias.add_(1.0)  # in place: same storage, new version
    assert head.fingerprint() != first
    with torch.no_grad():
        head.vocab_proj.bias.copy_(original)
    assert head.fingerprint() == first  # same values, same hash
