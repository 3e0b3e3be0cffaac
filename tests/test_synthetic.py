"""The synthetic generators (pyterrier_d2s.data.synthetic, .synthetic_collections) draw what the copies they
replaced drew: the frozen samples below were printed by the old code (tests/test_trainer.py's
synthetic_pairs, benchmarks/phenomena.py's planted_pairs, benchmarks/train_speed.py's synthetic_coco and
benchmarks/synthetic.py's make_collection), so benchmark numbers stay comparable."""

from __future__ import annotations

import numpy as np
import pytest

from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.data.synthetic import (
    coco_shaped_pairs,
    concept_tokens,
    planted_pairs,
    random_pairs,
    write_unsplit_vectors_dir,
)
from pyterrier_d2s.data.synthetic_collections import make_collection
from pyterrier_d2s.data.vectors_dir import read_vectors_dir


def test_random_pairs_frozen_sample():
    p = random_pairs(n_images=3, captions_per_image=2, dim=4, seed=0)
    np.testing.assert_allclose(
        p.image_vectors[0], [0.5799686312675476, 0.13155993819236755, 0.32178032398223877, 0.7367398738861084]
    )
    np.testing.assert_allclose(
        p.caption_vectors[5],
        [-0.30224525928497314, -0.2933768033981323, -0.008773516863584518, 0.9069183468818665],
    )
    assert p.caption_texts == [
        "woman tree beach big",
        "table man big dog",
        "table woman bus sitting",
        "blue small car big",
        "car tree car pizza",
        "pizza car woman sitting",
    ]
    assert p.image_ids == ["i0", "i1", "i2"] and p.caption_image.tolist() == [0, 0, 1, 1, 2, 2]
    assert p.image_split is None and p.validate() is p


def test_planted_pairs_and_concepts_frozen_sample(vocab):
    assert concept_tokens(vocab, 5, 0) == ["faintly", "justified", "libraries", "tristan", "hawke"]
    data, planted = planted_pairs(vocab, 4, captions_per_image=2, n_concepts=12, dim=6, seed=1)
    assert data.caption_texts[:2] == [
        "and integers the tile a means",
        "of integers with means with landscapes",
    ]
    assert data.caption_texts[-1] == "on integers on sonya and sedan"
    assert planted[0] == ["landscapes", "integers", "means", "tile"]
    assert planted[3] == ["means", "sedan", "integers", "sonya"]
    np.testing.assert_allclose(
        data.image_vectors[0],
        [0.41889292001724243, 0.10052938014268875, 0.019596902653574944, -0.021648013964295387]
        + [0.8025954365730286, 0.41159504652023315],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        data.caption_vectors[7],
        [-0.9552021026611328, -0.13520503044128418, -0.0057186949998140335, 0.13939140737056732]
        + [0.20970788598060608, 0.07660616189241409],
        rtol=1e-6,
    )
    assert data.name == "planted-4" and data.caption_ids[:3] == ["0-0", "0-1", "1-0"]


def test_coco_shaped_pairs_frozen_sample():
    c = coco_shaped_pairs(4, 2, 3, seed=0, val_images=1)
    assert c.caption_texts[:2] == [
        "plate pizza street person while and room pizza",
        "room person a field cat woman dog blue holding woman",
    ]
    np.testing.assert_allclose(
        c.image_vectors[3], [0.6099951863288879, 0.3936362862586975, -0.6877182722091675]
    )
    np.testing.assert_allclose(
        c.caption_vectors[7], [0.14336657524108887, 0.2879520654678345, -0.9468525052070618], rtol=1e-6
    )
    assert c.image_split.tolist() == ["train", "train", "train", "val"] and c.name == "synthetic-coco-4x2-d3"
    train, val = c.train_and_validation()
    assert (len(train.image_ids), len(val.image_ids)) == (3, 1)


def test_sparse_collection_frozen_sample_and_brute_force_flops():
    col = make_collection(11.0, 200, 4, seed=0)
    assert col.nnz_per_vector == pytest.approx(54.491610531344904, rel=1e-12)
    assert (col.docs.nnz, col.queries.nnz) == (10825, 229)
    assert col.terms[:3].tolist() == ["t06333", "t08988", "t27311"]
    assert sorted(col.expanded[0].items())[:2] == [
        ("t00736", pytest.approx(1.2268033027648926)),
        ("t01991", pytest.approx(0.9069463610649109)),
    ]
    assert len(col.short[0]) == 11 and set(col.short[0].items()) <= set(col.expanded[0].items())
    np.testing.assert_allclose(
        col.docs[0].data[:4],
        [0.7575902938842773, 0.49837133288383484, 0.49977320432662964, 0.3600791394710541],
    )
    # FLOPs (Eq. 1) by brute force: the mean number of shared terms over every (query, document) pair
    shared = [
        len(set(col.queries[q].indices) & set(col.docs[d].indices))
        for q in range(col.queries.shape[0])
        for d in range(col.docs.shape[0])
    ]
    assert col.flops == pytest.approx(np.mean(shared), rel=1e-12) == pytest.approx(11.66875, rel=1e-12)


def test_unsplit_vectors_dir_holds_the_first_pairs_without_labels(tmp_path):
    path = write_unsplit_vectors_dir(tmp_path / "d", 7)
    back, source = read_vectors_dir(path), load_pairs("coco500")
    assert back.image_split is None and back.image_ids == source.image_ids[:7]
    assert back.caption_texts == source.caption_texts[:7] and back.caption_image.tolist() == list(range(7))
    np.testing.assert_array_equal(back.image_vectors, source.image_vectors[:7])
    np.testing.assert_array_equal(back.caption_vectors, source.caption_vectors[:7])
