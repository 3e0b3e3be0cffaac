import numpy as np
import pytest
import torch

from pyterrier_d2s.training.expansion import ExpansionControl

V = 6
DF = np.array([0.0, 0.2, 0.5, 0.8, 1.0, 0.1])


def test_schedules_at_every_epoch():
    epochs = 4
    c = ExpansionControl("c+w", epochs, DF)
    for e in range(epochs):
        assert c.caption_prob(e) == pytest.approx(e / 3)
        expected = np.minimum(1.0, 1.0 - DF + e * DF / 3)
        np.testing.assert_allclose(c.word_probs(e).numpy(), expected, atol=1e-7)
    # both schedules reach 1 in the final epoch (the paper's text), and stay there
    assert c.caption_prob(epochs - 1) == 1.0
    np.testing.assert_allclose(c.word_probs(epochs - 1).numpy(), 1.0, atol=1e-7)
    assert c.caption_prob(epochs + 3) == 1.0
    # epoch 0 of c+w: p_k = 1 - df_k exactly
    np.testing.assert_allclose(c.word_probs(0).numpy(), 1 - DF, atol=1e-7)


def test_modes_schedules():
    assert ExpansionControl("0", 3, DF).caption_prob(2) == 0.0
    assert ExpansionControl("1", 3, DF).caption_prob(0) == 1.0
    c = ExpansionControl("c", 3, DF)
    assert c.caption_prob(1) == pytest.approx(1 / 2)
    assert ExpansionControl("c", 1, DF).caption_prob(0) == 0.0  # one epoch: the p_c = 0 phase only
    assert (c.word_probs(0) == 1).all()  # no word-level control in mode "c"


def test_bad_arguments():
    with pytest.raises(ValueError, match="exp must be one of"):
        ExpansionControl("w", 3, DF)
    with pytest.raises(ValueError, match="epochs"):
        ExpansionControl("c", 0, DF)
    with pytest.raises(ValueError, match="df"):
        ExpansionControl("c", 3, np.array([1.5]))
    with pytest.raises(ValueError, match="caption_draw"):
        ExpansionControl("c", 3, DF, caption_draw="step")
    with pytest.raises(ValueError, match="own_terms"):
        ExpansionControl("c", 3, DF, own_terms="drop")


def own_mask(n):
    own = torch.zeros(n, V)
    own[:, 1] = 1  # every caption contains token 1
    own[::2, 3] = 1  # even captions also contain token 3
    return own


def test_never_and_always():
    own = own_mask(10)
    assert torch.equal(ExpansionControl("0", 5, DF).mask(own, 3), own)
    assert torch.equal(ExpansionControl("1", 5, DF).mask(own, 0), torch.ones_like(own))


def test_own_tokens_always_kept_and_epoch0_never_expands():
    own = own_mask(200)
    for mode in ("c", "c+w"):
        c = ExpansionControl(mode, 5, DF)
        g = torch.Generator().manual_seed(0)
        assert torch.equal(c.mask(own, 0, g), own)  # p_c = 0 in the first epoch
        for epoch in range(5):
            m = c.mask(own, epoch, g)
            assert (m[own == 1] == 1).all()


def test_caption_level_draw_per_batch_is_shared_by_the_batch():
    n, draws = 16, 800
    c = ExpansionControl("c", 3, DF)  # epoch 1: p_c = 0.5
    own = torch.zeros(n, V)
    g = torch.Generator().manual_seed(3)
    e_c = torch.stack([c.mask(own, 1, g)[:, 0] for _ in range(draws)])  # (draws, n)
    # Algorithm 1 draws E_C once per batch: every caption of a step gets the same value
    assert (e_c.min(dim=1).values == e_c.max(dim=1).values).all()
    # and it is Ber(0.5) over the steps: 5 sigma = 5 * sqrt(.25/800) ≈ 0.088
    assert abs(e_c[:, 0].mean().item() - 0.5) < 0.088


def test_caption_level_draws_are_per_caption_and_independent():
    n, draws = 64, 400
    c = ExpansionControl("c", 3, DF, caption_draw="caption")  # epoch 1: p_c = 0.5
    own = torch.zeros(n, V)
    g = torch.Generator().manual_seed(1)
    e_c = torch.stack([c.mask(own, 1, g)[:, 0] for _ in range(draws)])  # (draws, n)
    # in mode "c" an expanded caption keeps every term: the row is all ones or all zeros
    # keep rate ≈ 0.5 over 25600 draws: 5 sigma = 5 * sqrt(.25/25600) ≈ 0.016
    assert abs(e_c.mean().item() - 0.5) < 0.016
    # captions of the same step differ (a per-batch draw would make all columns identical)
    assert (e_c.min(dim=1).values != e_c.max(dim=1).values).float().mean() > 0.99
    # pairwise correlation between captions ≈ 0 (independent): each |r| < 5/sqrt(draws) = 0.25
    corr = np.corrcoef(e_c.numpy().T)
    off_diag = corr[~np.eye(n, dtype=bool)]
    assert np.abs(off_diag).max() < 0.25
    assert abs(off_diag.mean()) < 0.02


def test_word_level_keep_rates_match_p_k():
    epochs, epoch = 4, 2
    c = ExpansionControl("c+w", epochs, DF, caption_draw="caption")
    p_c = c.caption_prob(epoch)
    p_k = c.word_probs(epoch).numpy()
    own = torch.zeros(32, V)
    g = torch.Generator().manual_seed(2)
    masks = torch.stack([c.mask(own, epoch, g) for _ in range(1500)])  # (draws, n, V)
    rates = masks.mean(dim=(0, 1)).numpy()
    # kept iff E_C(i)·E_k = 1 -> rate p_c·p_k. E_k is drawn once per step (Algorithm 1), so only the 1500
    # steps are independent: 5 sigma bound with n = 1500.
    expected = p_c * p_k
    bound = 5 * np.sqrt(expected * (1 - expected) / 1500)
    assert (np.abs(rates - expected) <= bound + 1e-9).all(), (rates, expected)
    # the word-level keep rate alone: per step, E_k = 1 iff some caption of the step kept term k
    e_k = masks.amax(dim=1).numpy()  # (draws, V); P(all 32 E_C = 0) = 0.5**32 is negligible
    assert (np.abs(e_k.mean(0) - p_k) <= 5 * np.sqrt(p_k * (1 - p_k) / 1500) + 1e-9).all()
    # a kept expansion term always needs its caption's E_C = 1: the word-level draw never overrides it
    captions_expanded = masks.amax(dim=2)
    assert (masks <= captions_expanded.unsqueeze(-1)).all()


def test_own_terms_word_draw_is_expand_literally():
    """own_terms="word-draw": an own token is kept iff E_k = 1 (EXPAND's else branch), expansion iff E_C·E_k."""
    epochs, epoch, draws = 3, 1, 1500
    c = ExpansionControl("c+w", epochs, DF, own_terms="word-draw")
    p_c, p_k = c.caption_prob(epoch), c.word_probs(epoch).numpy()
    own = own_mask(8)
    g = torch.Generator().manual_seed(4)
    masks = torch.stack([c.mask(own, epoch, g) for _ in range(draws)])  # (draws, n, V)
    # token 1 is own in every caption: kept at rate p_1 whatever E_C was
    rate_own = masks[:, :, 1].mean().item()
    assert abs(rate_own - p_k[1]) < 5 * np.sqrt(p_k[1] * (1 - p_k[1]) / draws)
    # token 2 is nobody's: kept at rate p_c·p_2
    rate_exp = masks[:, :, 2].mean().item()
    expected = p_c * p_k[2]
    assert abs(rate_exp - expected) < 5 * np.sqrt(expected * (1 - expected) / draws)
    # in a step, an own token and an expansion of the same token id share the one E_k draw
    same = masks[:, 0, 3] >= masks[:, 1, 3]  # caption 0 owns token 3, caption 1 does not
    assert same.all()
    # mode "c" has no E_k: own tokens stay kept
    keep = ExpansionControl("c", epochs, DF, own_terms="word-draw").mask(own, epoch, g)
    assert (keep[own == 1] == 1).all()
