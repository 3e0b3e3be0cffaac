"""AToMiC from a local copy: fixture parquet files in the published schema, read directly, through
ir_datasets and through ``pt.get_dataset("irds:...")``; one-line errors for bad copies."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pyterrier_d2s.data import DataError
from pyterrier_d2s.data.atomic import (
    download_atomic,
    find_layout,
    join_captions,
    join_query,
    load_atomic_split,
    read_image_bytes,
    register_atomic,
)
from pyterrier_d2s.data.atomic.frames import _free_rows
from pyterrier_d2s.data.atomic.layout import split_of

skimage_data = pytest.importorskip("skimage.data")

# text_id, page_title, section_title, context_section_description (+ columns the readers must ignore)
SECTIONS = {
    "train": [
        ("t-lion-0", "Lion", "Introduction", "The lion is a large cat of the genus Panthera."),
        ("t-camera-1", "Camera", "History", "The camera obscura projects an image."),
        ("t-camera-2", "Photographer", "Equipment", "A tripod holds the camera still."),
    ],
    "validation": [
        ("t-coffee-0", "Coffee", "Preparation", "Coffee is brewed from roasted beans."),
        ("t-cat-0", "Cat", "Introduction", "The cat is a small domesticated carnivore."),
        ("t-unjudged", "Unjudged", "Section", "No image is judged for this section."),
    ],
}
# image_id, skimage photo, reference, alt text, attribution (None: a null caption)
IMAGES = [
    ("img-001", "astronaut", "Eileen Collins in 1998", "An astronaut in a suit", "NASA portrait"),
    ("img-002", "camera", "A man with a camera", None, "Public domain photo"),
    ("img-003", "coffee", "A cup of coffee", "A cup of coffee", ""),
    ("img-004", "chelsea", "Chelsea the cat", "A tabby cat", "Photo by Stefan"),
]
QRELS = {
    "train": [("t-lion-0", "img-001"), ("t-camera-1", "img-002"), ("t-camera-2", "img-002")],
    "validation": [("t-coffee-0", "img-003"), ("t-cat-0", "img-004")],
}
CAPTIONS = (
    "caption_reference_description",
    "caption_alt_text_description",
    "caption_attribution_description",
)
_names = itertools.count()


def _png(name: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(getattr(skimage_data, name)()).save(buf, format="PNG")
    return buf.getvalue()


def _write_texts(root: Path, drop: str | None = None) -> None:
    for split, rows in SECTIONS.items():
        cols = dict(
            zip(
                ["text_id", "page_title", "section_title", "context_section_description"],
                map(list, zip(*rows, strict=True)),
                strict=True,
            )
        )
        cols["page_url"] = [f"https://en.wikipedia.org/wiki/{r[1]}" for r in rows]
        cols["language"] = ["en"] * len(rows)
        cols.pop(drop, None)
        path = root / "texts" / "data" / f"{split}-00000-of-00001-5e3a.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), path)


def _write_images(root: Path) -> None:
    """Two files: the Hub's ``{bytes, path}`` image struct (one row per row group) and plain binary."""
    for n, rows in enumerate((IMAGES[:2], IMAGES[2:])):
        blobs = [_png(r[1]) for r in rows]
        image = (
            pa.array(
                [{"bytes": b, "path": None} for b in blobs],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            )
            if n == 0
            else pa.array(blobs, type=pa.binary())
        )
        cols = {
            "image_url": [f"https://upload.wikimedia.org/{r[1]}.png" for r in rows],
            "image_id": [r[0] for r in rows],
            "image": image,
            "language": [["en"]] * len(rows),
        }
        cols.update({c: [r[2 + k] for r in rows] for k, c in enumerate(CAPTIONS)})
        path = root / "images" / "data" / f"train-0000{n}-of-00002.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), path, row_group_size=1)


def _write_qrels(root: Path) -> None:
    """train as the Hub's parquet, validation as TREC text; and a hidden file the reader must skip."""
    qdir = root / "qrels"
    (qdir / "data").mkdir(parents=True, exist_ok=True)
    train = QRELS["train"]
    pq.write_table(
        pa.table(
            {
                "text_id": [t for t, _ in train],
                "Q0": ["Q0"] * len(train),
                "image_id": [i for _, i in train],
                "rel": [1] * len(train),
            }
        ),
        qdir / "data" / "train-00000-of-00001-aa.parquet",
    )
    (qdir / "validation.qrels").write_text("".join(f"{t} Q0 {i} 1\n" for t, i in QRELS["validation"]))
    (qdir / ".cache" / "huggingface").mkdir(parents=True)
    (qdir / ".cache" / "huggingface" / "test-partial.parquet").write_bytes(b"not parquet")


def _write_copy(root: Path, drop_text_column: str | None = None) -> Path:
    _write_texts(root, drop_text_column)
    _write_images(root)
    _write_qrels(root)
    return root


@pytest.fixture(scope="module")
def atomic_dir(tmp_path_factory) -> Path:
    return _write_copy(tmp_path_factory.mktemp("atomic"))


def _query(split: str, qid: str) -> str:
    row = next(r for r in SECTIONS[split] if r[0] == qid)
    return join_query(*row[1:])


def _expected_docs() -> list[dict]:
    return [
        {"docno": r[0], "text": join_captions(*r[2:]), **{c: r[2 + k] or "" for k, c in enumerate(CAPTIONS)}}
        for r in IMAGES
    ]


def test_texts_are_joined_as_documented():
    assert join_query("Lion", "Introduction", " The lion. ") == "Lion Introduction The lion."
    assert join_captions("A cup", "A cup", "", None) == "A cup"


def test_layout_finds_parts_and_splits(atomic_dir):
    layout = find_layout(atomic_dir)
    assert layout.splits == ["train", "validation"]
    assert [p.name for p in layout.images] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert len(layout.texts) == 2


def test_ir_datasets_load_gives_docs_queries_qrels(atomic_dir):
    import ir_datasets

    name = f"d2s-atomic-test{next(_names)}"
    names = register_atomic(atomic_dir, name=name)
    assert names == [f"{name}/{s}{x}" for s in ("train", "validation") for x in ("", "/images")]
    assert register_atomic(atomic_dir, name=name) == names  # the same directory again: a no-op
    ds = ir_datasets.load(f"{name}/validation")
    assert [(q.query_id, q.text) for q in ds.queries_iter()] == [
        ("t-coffee-0", _query("validation", "t-coffee-0")),
        ("t-cat-0", _query("validation", "t-cat-0")),
    ]
    assert [(q.query_id, q.doc_id, q.relevance) for q in ds.qrels_iter()] == [
        (t, i, 1) for t, i in QRELS["validation"]
    ]
    assert ds.docs_count() == 4
    docs = [d._asdict() for d in ds.docs_iter()]
    assert docs == [{"doc_id": e.pop("docno"), **e} for e in _expected_docs()]
    assert list(ds.qrels_defs()) == [1]


def test_pt_get_dataset_irds(atomic_dir):
    import pyterrier as pt

    name = f"d2s-atomic-test{next(_names)}"
    register_atomic(atomic_dir, name=name)
    dataset = pt.get_dataset(f"irds:{name}/train")
    topics = dataset.get_topics()
    assert topics.columns.tolist() == ["qid", "query"]
    assert topics.values.tolist() == [[r[0], join_query(*r[1:])] for r in SECTIONS["train"]]
    qrels = dataset.get_qrels()
    assert qrels[["qid", "docno", "label"]].values.tolist() == [[t, i, 1] for t, i in QRELS["train"]]
    assert list(dataset.get_corpus_iter(verbose=False)) == _expected_docs()
    assert list(dataset.get_corpus_iter(verbose=False, start=1, count=2)) == _expected_docs()[1:3]


def test_image_bytes_decode_to_the_original_pixels(atomic_dir):
    import ir_datasets

    name = f"d2s-atomic-test{next(_names)}"
    register_atomic(atomic_dir, name=name)
    docs = list(ir_datasets.load(f"{name}/train/images").docs_iter())
    assert [d.doc_id for d in docs] == [r[0] for r in IMAGES]
    for doc, row in zip(docs, IMAGES, strict=True):
        pixels = np.asarray(Image.open(io.BytesIO(doc.image)))
        np.testing.assert_array_equal(pixels, getattr(skimage_data, row[1])())
    got = read_image_bytes(atomic_dir, ["img-004", "img-002"])
    assert sorted(got) == ["img-002", "img-004"]
    assert np.asarray(Image.open(io.BytesIO(got["img-004"]))).shape == (300, 451, 3)


def test_load_atomic_split_frames(atomic_dir):
    full = load_atomic_split(atomic_dir, "validation")
    assert full.queries.columns.tolist() == [
        "qid",
        "query",
        "page_title",
        "section_title",
        "context_section_description",
    ]
    assert full.queries["qid"].tolist() == ["t-coffee-0", "t-cat-0"]  # only the qrels' sections
    assert full.documents.to_dict("records") == _expected_docs()
    assert full.qrels.values.tolist() == [[t, i, 1] for t, i in QRELS["validation"]]
    judged = load_atomic_split(atomic_dir, "validation", judged_only=True)
    assert judged.documents["docno"].tolist() == ["img-003", "img-004"]
    one = load_atomic_split(atomic_dir, "validation", judged_only=True, negatives=1, seed=3, with_images=True)
    assert len(one.documents) == 3 and {"img-003", "img-004"} < set(one.documents["docno"])
    assert one.documents["docno"].tolist() == sorted(one.documents["docno"])  # collection order
    again = load_atomic_split(atomic_dir, "validation", judged_only=True, negatives=1, seed=3)
    assert again.documents["docno"].tolist() == one.documents["docno"].tolist()  # seeded
    assert all(Image.open(io.BytesIO(b)).size for b in one.documents["image"])
    everything = load_atomic_split(atomic_dir, "validation", judged_only=True, negatives=10)
    assert everything.documents["docno"].tolist() == [r[0] for r in IMAGES]


def _one_line_error(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_one_line_errors(tmp_path, atomic_dir):
    assert "no such AToMiC directory" in _one_line_error(lambda: find_layout(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    assert "no texts or AToMiC-Texts*" in _one_line_error(lambda: find_layout(tmp_path / "empty"))
    bad = _write_copy(tmp_path / "bad", drop_text_column="section_title")
    message = _one_line_error(lambda: load_atomic_split(bad, "train"))
    assert "train-00000-of-00001-5e3a.parquet" in message and "'section_title'" in message
    message = _one_line_error(lambda: load_atomic_split(atomic_dir, "test"))
    assert "no qrels for split 'test'" in message and "train, validation" in message
    (bad / "qrels" / "validation.qrels").write_text("t-coffee-0 img-003 1\n")
    assert "validation.qrels:1" in _one_line_error(lambda: load_atomic_split(bad, "validation"))


def test_registering_another_directory_under_a_taken_name(tmp_path, atomic_dir):
    name = f"d2s-atomic-test{next(_names)}"
    register_atomic(atomic_dir, name=name)
    other = _write_copy(tmp_path / "other")
    assert "already registered" in _one_line_error(lambda: register_atomic(other, name=name))


def test_env_var_makes_plain_names_load_after_import(atomic_dir):
    code = (
        "import pyterrier_d2s, ir_datasets\n"
        "ds = ir_datasets.load('d2s-atomic/validation')\n"
        "print(sorted(q.query_id for q in ds.queries_iter()), ds.docs_count())\n"
    )
    env = {**os.environ, "D2S_ATOMIC_DIR": str(atomic_dir)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "['t-cat-0', 't-coffee-0'] 4"


def test_download_without_datasets_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'pyterrier-d2s\[atomic\]'"):
        download_atomic(tmp_path)


def test_judged_images_missing_from_a_partial_copy_are_one_warning(tmp_path, caplog):
    partial = _write_copy(tmp_path / "partial")
    with open(partial / "qrels" / "validation.qrels", "a") as f:
        f.write("t-cat-0 Q0 img-999 1\nt-cat-0 Q0 img-998 1\n")
    with caplog.at_level("WARNING", logger="pyterrier_d2s.data.atomic"):
        split = load_atomic_split(partial, "validation", judged_only=True)
    assert split.documents["docno"].tolist() == ["img-003", "img-004"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "2 judged ids are not in the images, e.g. 'img-998'" in warnings[0]


@pytest.mark.parametrize(
    ("relative", "split"),
    [
        ("data/validation-00000-of-00001-3f2a.parquet", "validation"),
        ("default/test/0000.parquet", "test"),
        ("qrels.train.txt", "train"),
        ("dev.qrels", "validation"),
        ("data/other-00000-of-00001.parquet", None),
    ],
)
def test_the_split_of_a_qrels_file(relative, split):
    assert split_of(Path("/q") / relative, Path("/q")) == split


def test_negatives_are_drawn_from_the_unjudged_rows_only():
    rng = np.random.default_rng(1)
    for seed in range(300):
        n = int(rng.integers(1, 30))
        taken = np.sort(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False))
        k = int(rng.integers(0, n + 2))
        got = _free_rows(n, taken, k, seed).tolist()
        free = set(range(n)) - set(taken.tolist())
        assert len(got) == len(set(got)) == min(k, len(free)) and set(got) <= free


def test_image_bytes_are_read_only_from_the_row_groups_that_hold_them(atomic_dir, monkeypatch):
    reads = []
    original = pq.ParquetFile.read_row_group

    def recording(self, i, columns=None, **kwargs):
        reads.append((i, tuple(columns or ())))
        return original(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", recording)
    got = read_image_bytes(atomic_dir, ["img-004"])
    assert list(got) == ["img-004"]  # the second row group of the second file
    assert [r for r in reads if "image" in r[1]] == [(1, ("image_id", *CAPTIONS, "image"))]  # one group read
