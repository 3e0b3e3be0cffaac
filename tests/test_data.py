import json

import numpy as np
import pytest

from pyterrier_d2s.data import DataError, load_pairs, packaged_path
from pyterrier_d2s.data.vectors_dir import read_vectors_dir


def test_packaged_coco500():
    d = load_pairs("coco500")
    assert len(d.image_ids) == 500 and len(d.caption_ids) == 500 and d.dim == 512
    assert d.image_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d.image_vectors, axis=1), 1.0, atol=2e-3)
    # row i of the captions describes image row i
    assert (d.caption_image == np.arange(500)).all()
    assert d.caption_texts[0] == "A motorcycle with its brake extended standing outside"
    # the packaged copy lives inside the package, with its attribution
    path = packaged_path("coco500")
    assert "pyterrier_d2s" in str(path)
    assert "CC BY 4.0" in (path / "README.md").read_text()


def test_unknown_name_or_path():
    with pytest.raises(DataError, match="no data at 'nope'"):
        load_pairs("nope")


def write_vectors_dir(path, images, captions, iv, cv):
    path.mkdir(parents=True, exist_ok=True)
    (path / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in images))
    (path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in captions))
    np.save(path / "image_vectors.npy", np.asarray(iv, np.float32))
    np.save(path / "caption_vectors.npy", np.asarray(cv, np.float32))


def small(path, **over):
    images = [{"image_id": "i1", "split": "train"}, {"image_id": "i2", "split": "val"}]
    captions = [
        {"caption_id": "c1", "image_id": "i1", "caption": "a dog"},
        {"caption_id": "c2", "image_id": "i1", "caption": "the dog runs"},
        {"caption_id": "c3", "image_id": "i2", "caption": "a cat"},
    ]
    iv = np.eye(2, 3)
    cv = np.ones((3, 3)) / 3
    args = {"images": images, "captions": captions, "iv": iv, "cv": cv, **over}
    write_vectors_dir(path, **args)
    return path


def test_vectors_dir_with_splits(tmp_path):
    d = read_vectors_dir(small(tmp_path / "ok"))
    assert d.caption_image.tolist() == [0, 0, 1]
    assert d.splits == ["train", "val"]
    train, val = d.train_and_validation()
    assert train.image_ids == ["i1"] and train.caption_ids == ["c1", "c2"]
    assert val.image_ids == ["i2"] and val.caption_ids == ["c3"] and val.caption_image.tolist() == [0]
    assert d.evaluation_split() is d  # no test split: everything


def test_nan_vector_is_named(tmp_path):
    iv = np.eye(2, 3)
    iv[1, 2] = np.nan
    with pytest.raises(DataError, match="image 'i2' has a NaN or inf vector"):
        read_vectors_dir(small(tmp_path / "nan", iv=iv))
    cv = np.ones((3, 3))
    cv[2, 0] = np.inf
    with pytest.raises(DataError, match="caption 'c3' has a NaN or inf vector"):
        read_vectors_dir(small(tmp_path / "inf", cv=cv))


def test_dimension_mismatch(tmp_path):
    with pytest.raises(DataError, match="image vectors are 3-d, caption vectors are 4-d"):
        read_vectors_dir(small(tmp_path / "dim", cv=np.ones((3, 4))))


def test_caption_of_unknown_image(tmp_path):
    captions = [{"caption_id": "c1", "image_id": "i9", "caption": "a dog"}]
    with pytest.raises(DataError, match="caption 'c1' points to unknown image 'i9'"):
        read_vectors_dir(small(tmp_path / "unk", captions=captions, cv=np.ones((1, 3))))


def test_empty_caption(tmp_path):
    captions = [{"caption_id": "c1", "image_id": "i1", "caption": "  "}]
    with pytest.raises(DataError, match="caption 'c1' has empty text"):
        read_vectors_dir(small(tmp_path / "empty", captions=captions, cv=np.ones((1, 3))))


def test_row_count_mismatch_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="captions.jsonl has 3 lines but caption_vectors.npy has 2 rows"):
        read_vectors_dir(small(tmp_path / "rows", cv=np.ones((2, 3))))
    with pytest.raises(DataError, match="missing images.jsonl"):
        read_vectors_dir(tmp_path)


def write_authors_dir(path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.mkdir()
    rng = np.random.RandomState(0)
    img = {"id": [10, 11, 12], "emb": [rng.randn(4).astype(np.float32).tolist() for _ in range(3)]}
    txt = {
        "id": [100, 101, 102, 103, 104],
        "emb": [rng.randn(4).astype(np.float32).tolist() for _ in range(5)],
    }
    pq.write_table(pa.table(img), path / "img_embs.parquet")
    pq.write_table(pa.table(txt), path / "text_embs.parquet")
    meta = {
        "images": [
            {
                "imgid": 11,
                "split": "train",
                "sentences": [{"sentid": 103, "raw": "A cat."}, {"sentid": 100, "raw": "Cat."}],
            },
            {"imgid": 10, "split": "restval", "sentences": [{"sentid": 101, "raw": "A dog."}]},
            {"imgid": 12, "split": "test", "sentences": [{"sentid": 104, "raw": "Two birds."}]},
        ]
    }
    (path / "dataset_meta.json").write_text(json.dumps(meta))
    return img, txt


def test_authors_format(tmp_path):
    img, txt = write_authors_dir(tmp_path / "a")
    d = load_pairs(tmp_path / "a")
    assert d.image_ids == ["11", "10", "12"]
    assert d.caption_ids == ["103", "100", "101", "104"]
    assert d.caption_texts[0] == "A cat."
    assert d.caption_image.tolist() == [0, 0, 1, 2]
    # vectors follow the ids, not the parquet row order
    np.testing.assert_allclose(d.image_vectors[0], img["emb"][1], rtol=1e-6)
    np.testing.assert_allclose(d.caption_vectors[0], txt["emb"][3], rtol=1e-6)
    train, val = d.train_and_validation()
    assert train.image_ids == ["11", "10"]  # train + restval
    assert val is train  # no val split: validate on the training pairs
    assert d.evaluation_split().caption_ids == ["104"]


def test_authors_format_missing_vector(tmp_path):
    write_authors_dir(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "dataset_meta.json").read_text())
    meta["images"][0]["sentences"].append({"sentid": 999, "raw": "x"})
    (tmp_path / "a" / "dataset_meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="caption '999' of image '11' has no vector"):
        load_pairs(tmp_path / "a")


def test_topics_qrels_corpus(tmp_path):
    d = read_vectors_dir(small(tmp_path / "ok"))
    topics = d.topics()
    assert topics["qid"].tolist() == ["c1", "c2", "c3"] and topics["query"].tolist()[0] == "a dog"
    np.testing.assert_allclose(np.stack(topics["query_vec"]), d.caption_vectors)
    assert d.qrels()[["qid", "docno", "label"]].values.tolist() == [
        ["c1", "i1", 1],
        ["c2", "i1", 1],
        ["c3", "i2", 1],
    ]
    docs = list(d.corpus_iter())
    assert [x["docno"] for x in docs] == ["i1", "i2"]
    np.testing.assert_allclose(docs[1]["doc_vec"], d.image_vectors[1])


def test_training_never_imports_pyterrier():
    import subprocess
    import sys

    code = (
        "import sys, pyterrier_d2s\n"
        "from pyterrier_d2s import D2STrainer, TrainConfig, load_pairs, D2SHead\n"
        "import pyterrier_d2s.training, pyterrier_d2s.evaluation\n"
        "assert 'pyterrier' not in sys.modules, 'training imported pyterrier'\n"
        "from pyterrier_d2s import D2SIndex\n"
        "assert 'pyterrier' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_public_names_resolve():
    import pyterrier_d2s

    assert set(pyterrier_d2s.__all__) == {*pyterrier_d2s._PUBLIC, "__version__"}
    for name in pyterrier_d2s._PUBLIC:
        assert getattr(pyterrier_d2s, name).__name__ == name


def test_float64_vectors_are_stored_as_float32():
    from pyterrier_d2s.data import PairedVectors

    rng = np.random.default_rng(0)
    pairs = PairedVectors(
        image_ids=["a", "b"],
        image_vectors=rng.standard_normal((2, 4)),  # float64, as numpy and pandas hand them out
        caption_ids=["c1", "c2"],
        caption_texts=["a dog", "a cat"],
        caption_image=[0, 1],
        caption_vectors=rng.standard_normal((2, 4)),
    )
    assert pairs.image_vectors.dtype == np.float32 and pairs.caption_vectors.dtype == np.float32
    assert pairs.caption_image.dtype == np.int64
    pairs.validate()
