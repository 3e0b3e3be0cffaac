import math

import pytest

from pyterrier_d2s.training.recipe import TrainingSetShape, auto_recipe, paper_recipe, recipe_for


@pytest.mark.parametrize(
    "captions, batch, epochs",
    [
        (350, 16, 28),  # 350 / 20 = 17.5 -> 16; 22 steps an epoch -> ceil(600 / 22) = 28 epochs
        (400, 16, 24),  # 25 steps an epoch
        (1200, 64, 32),  # 60 -> 64; 19 steps -> 32
        (80, 16, 120),  # 5 steps an epoch -> 120 epochs (>= 600 steps)
        (8, 16, 200),  # one step an epoch: capped at the paper's 200
        (566_435, 512, 20),  # MSCOCO: the paper's batch, 1,107 steps an epoch, 20 epochs
    ],
)
def test_auto_recipe_rule(captions, batch, epochs):
    r = auto_recipe(TrainingSetShape(images=captions, captions=captions, dim=512))
    assert (r["batch_size"], r["epochs"]) == (batch, epochs)
    steps = epochs * math.ceil(captions / batch)
    expected_lr = min(1e-3, max(5e-5, 5e-5 * math.sqrt(200 * 1107 / steps)))
    assert r["lr_vocab"] == pytest.approx(expected_lr, rel=1e-2)
    assert r["lr_proj"] == 1e-3 and r["output_vocab"] == "caption-words" and r["select_from"] == 0.5


def test_lr_vocab_reaches_the_papers_value_at_the_papers_length():
    # the paper's run (200 epochs of MSCOCO) gets the published 5e-5 back
    r = auto_recipe(TrainingSetShape(113_287, 566_435, 256))
    steps = r["epochs"] * math.ceil(566_435 / 512)
    assert 5e-5 * math.sqrt(200 * 1107 / (200 * 1107)) == 5e-5
    assert r["lr_vocab"] == pytest.approx(5e-5 * math.sqrt(200 * 1107 / steps), rel=1e-2)


def test_paper_recipe_and_unknown_name():
    shape = TrainingSetShape(10, 10, 4)
    assert paper_recipe(shape) == recipe_for("paper", shape)
    assert paper_recipe(shape)["epochs"] == 200 and paper_recipe(shape)["batch_size"] == 512
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipe_for("coco500", shape)


def test_small_sets_score_every_training_image_with_a_softer_teacher():
    from pyterrier_d2s.training import TrainConfig

    small = TrainingSetShape(images=350, captions=350, dim=512)
    assert (auto_recipe(small)["candidates"], auto_recipe(small)["tau"]) == ("all-images", 0.01)
    edge = TrainingSetShape(images=4096, captions=20_000, dim=512)
    assert auto_recipe(edge)["candidates"] == "all-images"
    big = TrainingSetShape(images=4097, captions=20_000, dim=512)
    assert (auto_recipe(big)["candidates"], auto_recipe(big)["tau"]) == ("batch", 1e-3)
    assert (paper_recipe(small)["candidates"], paper_recipe(small)["tau"]) == ("batch", 1e-3)
    # explicit values win over the recipe
    cfg = TrainConfig(tau=1e-3).resolved(small)
    assert (cfg.candidates, cfg.tau) == ("all-images", 1e-3)
    # τ follows explicit candidates (the paper's 1e-3 with the batch's images), also under recipe="paper"
    assert TrainConfig(candidates="batch").resolved(small).tau == 1e-3
    assert TrainConfig(recipe="paper", candidates="all-images").resolved(small).tau == 0.01
