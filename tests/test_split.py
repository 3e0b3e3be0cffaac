"""Held-out splits by image: seeded fractions, folds, the JSON description, and the packaged coco500 split."""

import json
from collections import Counter

import numpy as np
import pytest

from pyterrier_d2s.data import (
    DataError,
    PairedVectors,
    apply_split,
    assign_split,
    describe_split,
    ensure_split,
    load_all_captions,
    load_pairs,
    load_split,
    packaged_path,
    save_split,
    split_for_head,
    without_split,
)
from pyterrier_d2s.data.synthetic import random_pairs


@pytest.fixture(scope="module")
def coco():
    """coco500 without its shipped labels, as a data set without a split would arrive."""
    return without_split(load_pairs("coco500"))


def pairs(n_images: int, captions_per_image: int = 2) -> PairedVectors:
    return random_pairs(n_images, captions_per_image, dim=4, name="tiny")


def ids(data: PairedVectors, split: str) -> set[str]:
    return {i for i, s in zip(data.image_ids, data.image_split, strict=True) if s == split}


def test_default_split_fractions_seed_and_disjointness(coco):
    s = assign_split(coco)
    assert Counter(s.image_split.tolist()) == {"train": 400, "val": 50, "test": 50}
    train, val, test = ids(s, "train"), ids(s, "val"), ids(s, "test")
    assert not (train & val or train & test or val & test) and len(train | val | test) == 500
    # the same seed gives the same split; another seed another one
    again = assign_split(coco, seed=0)
    assert (again.image_split == s.image_split).all()
    other = assign_split(coco, seed=1)
    assert ids(other, "test") != test and len(ids(other, "test")) == 50
    # the images are shuffled with numpy's default_rng(seed): the first 50 of the permutation are test
    order = np.random.default_rng(0).permutation(500)
    assert test == {coco.image_ids[r] for r in order[:50]}
    assert val == {coco.image_ids[r] for r in order[50:100]}
    # the original is left unlabelled
    assert coco.image_split is None
    # other fractions: 70/20/10 of 500 images
    s2 = assign_split(coco, seed=3, fractions=(0.7, 0.2, 0.1))
    assert Counter(s2.image_split.tolist()) == {"train": 350, "val": 100, "test": 50}
    with pytest.raises(ValueError, match="sum to 1"):
        assign_split(coco, fractions=(0.8, 0.1, 0.2))


def test_captions_follow_their_images():
    d = pairs(20, captions_per_image=3)
    s = assign_split(d, seed=5)
    cap_split = s.image_split[s.caption_image]
    for split in ("train", "val", "test"):
        part = s.subset(split)
        # 3 captions for each image of the split, and all of them are that image's captions
        assert len(part.caption_ids) == 3 * len(part.image_ids)
        assert {part.image_ids[r] for r in part.caption_image} == set(part.image_ids)
        assert {c for c, sp in zip(s.caption_ids, cap_split, strict=True) if sp == split} == set(
            part.caption_ids
        )
    # 20 images: round(2) test, round(2) val, 16 train
    assert Counter(s.image_split.tolist()) == {"train": 16, "val": 2, "test": 2}


def test_folds_cover_every_image_once(coco):
    tested = Counter()
    for f in range(5):
        s = assign_split(coco, seed=0, fold=f, num_folds=5)
        counts = Counter(s.image_split.tolist())
        # 100 test images; 1/8 of the other 400 validate; the rest train
        assert counts == {"test": 100, "val": 50, "train": 350}
        tested.update(ids(s, "test"))
        assert not ids(s, "test") & ids(s, "val")
    assert set(tested) == set(coco.image_ids) and set(tested.values()) == {1}
    # fold f's test images are the f-th fifth of the seeded shuffle
    order = np.random.default_rng(0).permutation(500)
    s = assign_split(coco, seed=0, fold=2, num_folds=5)
    assert ids(s, "test") == {coco.image_ids[r] for r in order[200:300]}
    with pytest.raises(ValueError, match="fold must be in 0..num_folds-1"):
        assign_split(coco, fold=5, num_folds=5)
    with pytest.raises(ValueError, match="give both fold and num_folds"):
        assign_split(coco, fold=1)


def test_tiny_sets_are_refused_with_their_name():
    s = assign_split(pairs(4))  # the smallest: 1 test, 1 val, 2 train
    assert Counter(s.image_split.tolist()) == {"train": 2, "val": 1, "test": 1}
    with pytest.raises(DataError, match="tiny: 3 images are too few"):
        assign_split(pairs(3))
    with pytest.raises(DataError, match="tiny: 3 images cannot make 4 folds"):
        assign_split(pairs(3), fold=0, num_folds=4)
    # 4 images in 2 folds: 2 test, 1 val, 1 train
    with pytest.raises(DataError, match="tiny: 4 images are too few for fold 0 of 2"):
        assign_split(pairs(4), fold=0, num_folds=2)
    # 5 images in 2 folds: folds of 3 and 2; fold 0 leaves 2 others, 1 val and only 1 train
    with pytest.raises(DataError, match="tiny: 5 images are too few for fold 0 of 2"):
        assign_split(pairs(5), fold=0, num_folds=2)
    s = assign_split(pairs(6), fold=1, num_folds=2)
    assert Counter(s.image_split.tolist()) == {"test": 3, "val": 1, "train": 2}


def test_existing_labels_with_a_train_split_are_kept():
    d = assign_split(pairs(10), seed=1)
    assert ensure_split(d, seed=7) is d
    fresh = ensure_split(pairs(10), seed=1)
    assert (fresh.image_split == d.image_split).all()


def test_json_round_trip_and_apply(coco, tmp_path):
    s = assign_split(coco, seed=4)
    desc = describe_split(s)
    assert desc["held_out"] is True and desc["seed"] == 4 and desc["source"] == "seeded"
    assert desc["fractions"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert (desc["n_train"], desc["n_val"], desc["n_test"], desc["n_images"]) == (400, 50, 50, 500)
    assert set(desc["test"]) == ids(s, "test") and set(desc["val"]) == ids(s, "val")
    path = save_split(s, tmp_path / "head")
    assert path.name == "split.json"
    loaded = load_split(tmp_path / "head")
    assert loaded == json.loads(json.dumps(desc))
    back = apply_split(coco, loaded)
    assert (back.image_split == s.image_split).all()
    assert describe_split(back) == desc
    # the images in another order: the labels follow the ids
    flipped = coco.subset(None)
    rows = np.arange(500)[::-1]
    flipped = PairedVectors(
        image_ids=[coco.image_ids[r] for r in rows],
        image_vectors=coco.image_vectors[rows],
        caption_ids=coco.caption_ids,
        caption_texts=coco.caption_texts,
        caption_image=499 - coco.caption_image,
        caption_vectors=coco.caption_vectors,
        name="flipped",
    )
    assert ids(apply_split(flipped, loaded), "test") == ids(s, "test")
    # folds are described by fold and num_folds
    fold = describe_split(assign_split(coco, seed=2, fold=3, num_folds=5))
    assert (fold["source"], fold["seed"], fold["fold"], fold["num_folds"], fold["n_test"]) == (
        "fold",
        2,
        3,
        5,
        100,
    )
    assert "fractions" not in fold


def test_apply_names_the_first_missing_image(coco):
    desc = describe_split(assign_split(coco))
    desc["test"] = [desc["test"][0], "no-such-image", "another-missing"]
    with pytest.raises(DataError, match="the split's test image 'no-such-image' is not in the data"):
        apply_split(coco, desc)


def test_split_for_head(coco, tmp_path):
    head = tmp_path / "h"
    assert split_for_head(coco, head) is coco  # no split.json: as it is
    s = assign_split(coco, seed=9)
    save_split(s, head)
    assert ids(split_for_head(coco, head), "test") == ids(s, "test")
    assert split_for_head(s, head) is s  # labels that agree are kept
    other = assign_split(coco, seed=10)
    with pytest.raises(DataError, match="its test split .50 images. is not the one in .*split.json"):
        split_for_head(other, head)
    save_split(without_split(coco), head)  # a --no-split head: evaluated on everything
    assert load_split(head) == {
        "version": 1,
        "data": coco.name,
        "held_out": False,
        "source": "none",
        "n_train": 500,
        "n_val": 500,
        "n_test": 500,
        "n_images": 500,
    }
    assert split_for_head(s, head).image_split is None


def test_packaged_coco500_has_the_fixed_split(coco):
    d = load_pairs("coco500")
    assert Counter(d.image_split.tolist()) == {"train": 400, "val": 50, "test": 50}
    # made with assign_split(seed=0) on the images in file order
    assert (assign_split(coco, seed=0).image_split == d.image_split).all()
    train, val = d.train_and_validation()
    assert (len(train.image_ids), len(val.image_ids), len(d.evaluation_split().image_ids)) == (400, 50, 50)
    assert "seed 0" in (packaged_path("coco500") / "README.md").read_text()


def test_packaged_coco500_ships_five_captions_per_image():
    d = load_pairs("coco500")
    lines = (packaged_path("coco500") / "captions_all.jsonl").read_text().splitlines()
    assert len(lines) == 2500
    caps = load_all_captions("coco500")
    assert list(caps) == d.image_ids and all(len(c) == 5 for c in caps.values())
    assert caps["179765"][0] == "A black Honda motorcycle parked in front of a garage."
    # the captioned-with-a-vector caption is one of the five (up to runs of spaces, collapsed in that file)
    for text, row in zip(d.caption_texts, d.caption_image, strict=True):
        assert " ".join(text.split()) in caps[d.image_ids[row]]
    readme = (packaged_path("coco500") / "README.md").read_text()
    assert "captions_all.jsonl" in readme and "CC BY 4.0" in readme and "COCO Consortium" in readme
    with pytest.raises(DataError, match="no captions_all.jsonl"):
        load_all_captions(packaged_path("coco500").parent)
