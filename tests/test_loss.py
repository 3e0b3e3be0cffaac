import math

import pytest
import torch

from pyterrier_d2s.training.loss import (
    D2SLoss,
    distillation_ce,
    l1_norm,
    sparse_scores,
    teacher_scores,
)
from pyterrier_d2s.training.schedule import l1_warmup_factor


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_eq7_hand_computed():
    # 2 images, 2 captions, 3-term vocabulary
    s_img = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.5]])
    s_cap = torch.tensor([[0.5, 0.0, 1.0], [0.0, 2.0, 0.0]])
    z_img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z_cap = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    tau, lam, eta = 0.5, 0.25, 0.1
    # student scores s_I · s_C: [[2.5, 0], [0.5, 2]]; teacher z_I · z_C: [[.8, 0], [.96, .8]]
    student = [[2.5, 0.0], [0.5, 2.0]]
    teacher = [[0.8, 0.0], [0.96, 0.8]]

    def ce(rows_s, rows_t):
        total = 0.0
        for s_row, t_row in zip(rows_s, rows_t, strict=True):
            p_s, p_t = softmax(s_row), softmax([t / tau for t in t_row])
            total += -sum(pt * math.log2(ps) for pt, ps in zip(p_t, p_s, strict=True))
        return total / len(rows_s)

    transpose = lambda m: [list(r) for r in zip(*m, strict=True)]  # noqa: E731
    i2c = ce(student, teacher)
    c2i = ce(transpose(student), transpose(teacher))
    l1_i = (3.0 + 1.5) / 2
    l1_c = (1.5 + 2.0) / 2
    expected = (1 - lam) * (i2c + c2i) + lam * eta * (l1_i + l1_c)

    parts = D2SLoss(tau=tau, lam=lam, eta=eta)(s_img, s_cap, z_img, z_cap)
    assert parts.i2c.item() == pytest.approx(i2c, rel=1e-6)
    assert parts.c2i.item() == pytest.approx(c2i, rel=1e-6)
    assert parts.l1_img.item() == pytest.approx(l1_i)
    assert parts.l1_cap.item() == pytest.approx(l1_c)
    assert parts.total.item() == pytest.approx(expected, rel=1e-6)
    # the L1 warm-up factor scales only the regulariser
    half = D2SLoss(tau=tau, lam=lam, eta=eta)(s_img, s_cap, z_img, z_cap, l1_factor=0.5)
    assert half.total.item() == pytest.approx(
        (1 - lam) * (i2c + c2i) + 0.5 * lam * eta * (l1_i + l1_c), rel=1e-6
    )


def test_teacher_gets_no_gradient_and_student_does():
    s_img = torch.rand(4, 5, requires_grad=True)
    s_cap = torch.rand(4, 5, requires_grad=True)
    z_img = torch.randn(4, 3, requires_grad=True)
    z_cap = torch.randn(4, 3, requires_grad=True)
    D2SLoss()(s_img, s_cap, z_img, z_cap).total.backward()
    assert z_img.grad is None and z_cap.grad is None
    assert s_img.grad.abs().sum() > 0 and s_cap.grad.abs().sum() > 0


def test_perfect_student_reaches_teacher_entropy():
    # student == teacher logits -> CE equals the teacher's entropy (in bits)
    t = torch.tensor([[2.0, 0.0, -1.0]])
    ce = distillation_ce(t, t, tau=1.0).item()
    p = softmax([2.0, 0.0, -1.0])
    assert ce == pytest.approx(-sum(x * math.log2(x) for x in p), rel=1e-6)


def test_sparse_scores_equal_dense_product():
    a = torch.relu(torch.randn(6, 50))
    b = torch.relu(torch.randn(4, 50))
    a[:, :20] = 0  # columns inactive on one side
    b[:, 30:] = 0
    torch.testing.assert_close(sparse_scores(a, b), a @ b.T)


def test_l1_and_warmup():
    assert l1_norm(torch.tensor([[1.0, 2.0], [0.0, 3.0]])).item() == pytest.approx(3.0)
    assert [l1_warmup_factor(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 1 / 16, 0.25, 1.0, 1.0]
    assert l1_warmup_factor(0, 0) == 1.0


def test_bad_hyperparameters():
    with pytest.raises(ValueError):
        D2SLoss(tau=0)
    with pytest.raises(ValueError):
        D2SLoss(lam=1.5)
    with pytest.raises(ValueError):
        D2SLoss(eta=-1)


def test_teacher_stays_float32_inside_autocast():
    # τ = 0.001 turns bf16 rounding of z·z (≈ 0.4 % relative) into logit errors of order 1
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    exact = z_a @ z_b.T
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = teacher_scores(z_a, z_b)
        assert (z_a @ z_b.T).dtype == torch.bfloat16  # what a plain product would have given
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, exact, rtol=0, atol=0)


def test_flops_regulariser_hand_computed():
    from pyterrier_d2s.training.loss import D2SLoss, flops_norm

    s = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # column means 2, 0, 1 -> 4 + 0 + 1
    assert float(flops_norm(s)) == pytest.approx(5.0)
    z = torch.eye(2)
    flops = D2SLoss(eta=0.1, regulariser="flops")(s, s, z, z)
    l1 = D2SLoss(eta=0.1)(s, s, z, z)
    assert float(flops.l1_img) == pytest.approx(5.0) and float(l1.l1_img) == pytest.approx(
        3.0
    )  # mean row sum
    assert float(flops.total - l1.total) == pytest.approx(0.5 * 0.1 * 2 * (5.0 - 3.0))
    with pytest.raises(ValueError, match="regulariser"):
        D2SLoss(regulariser="l2")
