"""The generalisation-gap options of TrainConfig (issue 10): dropout, input noise, EMA, L2-SP, all-image
candidates and the all-captions ridge target. All off by default; each checked against hand-computed values."""

import numpy as np
import pytest
import torch

from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.data.synthetic import random_pairs
from pyterrier_d2s.training import D2STrainer, TrainConfig
from pyterrier_d2s.training.compact_head import TrainingHead
from pyterrier_d2s.training.regularisers import WeightAverage, dropout_mask, l2sp_penalty, perturb_inputs
from pyterrier_d2s.training.text_space import all_caption_targets


def small_config(**over):
    cfg = dict(exp="c+w", eta=1e-3, epochs=3, batch_size=16, hidden_dim=16, init="random", seed=7)
    cfg.update(over)
    return TrainConfig(**cfg)


def test_defaults_are_off_and_bad_values_are_refused():
    cfg = TrainConfig()
    assert (cfg.hidden_dropout, cfg.input_noise, cfg.input_dropout, cfg.ema_decay) == (0, 0, 0, 0)
    assert (cfg.l2sp_proj, cfg.l2sp_vocab, cfg.ridge_all_captions) == (0, 0, False)
    assert cfg.candidates is None and cfg.tau is None  # the recipe's (see test_recipe)
    assert not cfg.stochastic_step
    for bad, match in (
        ({"hidden_dropout": 1.0}, "hidden_dropout must be in"),
        ({"input_dropout": -0.1}, "input_dropout must be in"),
        ({"input_noise": -1}, "input_noise must be >= 0"),
        ({"ema_decay": 1.0}, "ema_decay must be in"),
        ({"l2sp_proj": -1}, "l2sp_proj must be >= 0"),
        ({"candidates": "everything"}, "candidates must be one of"),
    ):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_dropout_mask_values_and_mean():
    g = torch.Generator().manual_seed(0)
    m = dropout_mask((200, 50), 0.2, g, torch.device("cpu"))
    assert set(torch.unique(m).tolist()) == {0.0, 1.25}
    assert abs(float((m == 0).float().mean()) - 0.2) < 0.02
    # the same generator state draws the same mask
    again = dropout_mask((200, 50), 0.2, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(m, again)


def test_perturb_inputs_is_hand_computable():
    z = torch.ones(3, 4)
    assert perturb_inputs(z, 0.0, 0.0, None) is z
    noisy = perturb_inputs(z, 0.5, 0.0, torch.Generator().manual_seed(3))
    expected = z + torch.randn(3, 4, generator=torch.Generator().manual_seed(3)) * (0.5 / 2.0)  # 0.5/sqrt(4)
    torch.testing.assert_close(noisy, expected)
    dropped = perturb_inputs(z, 0.0, 0.5, torch.Generator().manual_seed(1))
    keep = torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) >= 0.5
    torch.testing.assert_close(dropped, keep.float() * 2.0)


def _head(vocab, **noise):
    trainer = D2STrainer(small_config(), vocab=vocab, progress=False)
    head = TrainingHead(trainer.new_head(8), np.arange(1000, 1200))
    with torch.no_grad():
        head.vocab_proj.bias.fill_(0.5)  # many active terms
    for k, v in noise.items():
        setattr(head, k, v)
    head.generator = torch.Generator().manual_seed(0)
    return head


def test_hidden_dropout_and_input_noise_act_in_training_only(vocab):
    z = torch.randn(5, 8)
    plain = _head(vocab)
    for noise in ({"hidden_dropout": 0.5}, {"input_noise": 0.3}, {"input_dropout": 0.3}):
        head = _head(vocab, **noise)
        head.eval()
        torch.testing.assert_close(head(z), plain.eval()(z))  # eval: exactly the plain head
        head.train()
        assert not torch.allclose(head(z), plain(z))
    # hidden dropout by hand: the hidden vector times the mask drawn from the head's generator
    head = _head(vocab, hidden_dropout=0.5).train()
    hidden = head.norm(head.proj(z))
    mask = dropout_mask(hidden.shape, 0.5, torch.Generator().manual_seed(0), hidden.device)
    expected = torch.log1p(torch.relu((hidden * mask) @ head.vocab_proj.weight.T + head.vocab_proj.bias))
    torch.testing.assert_close(head(z), expected)


def test_weight_average_update_formula():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = WeightAverage(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert float(ema.module.weight) == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)  # 1.2
    ema.update(model)
    assert float(ema.module.weight) == pytest.approx(0.9 * 1.2 + 0.1 * 3.0)  # 1.38
    assert model.weight.item() == 3.0 and not ema.module.weight.requires_grad


def test_l2sp_penalty_value_and_gradient():
    w = torch.full((2, 2), 2.0, requires_grad=True)
    v = torch.ones(3, requires_grad=True)
    total = l2sp_penalty([w, v], [torch.zeros(2, 2), torch.ones(3)], [0.5, 10.0])
    assert float(total.detach()) == pytest.approx(0.5 * 16.0)  # v is at its start
    total.backward()
    torch.testing.assert_close(w.grad, torch.full((2, 2), 2.0))  # 2 · 0.5 · (w - 0)
    assert l2sp_penalty([w], [torch.zeros(2, 2)], [0.0]) is None


def test_a_strong_l2sp_pull_keeps_w1_at_its_start(vocab):
    data = random_pairs()
    trainer = D2STrainer(small_config(), vocab=vocab, progress=False)
    start = trainer.new_head(data.dim).proj.weight.detach().clone()  # new_head is seeded: the run's start
    free_head = trainer.fit(data).head
    free = free_head.proj.weight.detach()
    pulled = D2STrainer(small_config(l2sp_proj=1e4), vocab=vocab, progress=False).fit(data)
    # the head records the options set away from their defaults, and only those
    assert pulled.head.config.extra["l2sp_proj"] == 1e4 and "l2sp_proj" not in free_head.config.extra
    moved = (pulled.head.proj.weight.detach() - start).norm()
    assert moved < 0.2 * (free - start).norm()


def test_ema_run_returns_the_average_and_resumes_exactly(tmp_path, vocab):
    from pyterrier_d2s.training.checkpoint import CHECKPOINT_NAME

    data = random_pairs()
    cfg = small_config(ema_decay=0.9, hidden_dropout=0.2, input_noise=0.1, select_from=0.0)
    full = D2STrainer(cfg, vocab=vocab, checkpoint_dir=tmp_path / "a", progress=False).fit(data)
    ckpt = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)
    assert {"ema", "noise_generator"} <= set(ckpt)
    if full.best_epoch == cfg.epochs:  # the kept weights are the average, not the last step's
        assert torch.equal(ckpt["best_state"]["proj.weight"], ckpt["ema"]["proj.weight"])
        assert not torch.equal(ckpt["ema"]["proj.weight"], ckpt["head"]["proj.weight"])

    class Kill(Exception):
        pass

    def die(event, info):
        if event == "step" and info["epoch"] == 1 and info["step"] == 1:
            raise Kill

    with pytest.raises(Kill):
        D2STrainer(cfg, vocab=vocab, checkpoint_dir=tmp_path / "b", callbacks=[die], progress=False).fit(data)
    resumed = D2STrainer(cfg, vocab=vocab, checkpoint_dir=tmp_path / "b", progress=False).fit(data)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for (name, a), (_, b) in zip(
        full.head.state_dict().items(), resumed.head.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_all_image_candidates_score_every_training_image(vocab):
    data = random_pairs()
    seen = []
    trainer = D2STrainer(small_config(epochs=1, candidates="all-images"), vocab=vocab, progress=False)
    from pyterrier_d2s.training import trainer as trainer_module

    original = trainer_module.D2SLoss.__call__

    def spy(self, s_img, s_cap, z_img, z_cap, l1_factor=1.0):
        seen.append((len(s_img), len(s_cap)))
        return original(self, s_img, s_cap, z_img, z_cap, l1_factor)

    trainer_module.D2SLoss.__call__ = spy
    try:
        trainer.fit(data)
    finally:
        trainer_module.D2SLoss.__call__ = original
    train, _ = data.train_and_validation()
    assert seen and all(n_img == len(train.image_ids) for n_img, _ in seen)
    assert seen[0][1] == 16
    # candidates="batch" (the paper): the batch's own images only
    seen.clear()
    trainer_module.D2SLoss.__call__ = spy
    try:
        D2STrainer(small_config(epochs=1, candidates="batch"), vocab=vocab, progress=False).fit(data)
    finally:
        trainer_module.D2SLoss.__call__ = original
    assert seen[0] == (16, 16)


class _FakeEncoder:
    """Each text's embedding: a one-hot of its length (mod 3), so means are easy to compute by hand."""

    def encode(self, texts):
        out = np.zeros((len(texts), 3), dtype=np.float32)
        out[np.arange(len(texts)), [len(t) % 3 for t in texts]] = 1.0
        return out


def test_all_caption_targets_are_the_normalised_mean_of_every_text():
    fallback = np.array([[0, 0, 1], [0, 1, 0]], dtype=np.float32)
    out = all_caption_targets(_FakeEncoder(), ["a", "b"], {"a": ["xyz", "x", "xy", "x"]}, fallback)
    # "a": lengths 3, 1, 2, 1 -> one-hots e0 + e1 + e2 + e1 = (1, 2, 1), normalised; "b" keeps its fallback
    np.testing.assert_allclose(out[0], np.array([1, 2, 1]) / np.sqrt(6), rtol=1e-6)
    np.testing.assert_array_equal(out[1], fallback[1])


def test_a_vectors_dir_with_all_captions_exposes_them_in_meta():
    data = load_pairs("coco500")
    captions = data.meta["image_captions"]
    assert len(captions) == 500 and all(len(v) == 5 for v in captions.values())
    first = data.image_ids[int(data.caption_image[0])]
    assert data.caption_texts[0] in captions[first]
