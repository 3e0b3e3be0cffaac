"""Why did this image match? Per-term contributions against the engines' exact scores and a brute force, the
HTML rendering (it parses, names every result, shows thumbnails when the image files are known) and
``d2s search --explain`` / ``--html FILE``."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pyterrier_d2s.cli import main
from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.explain import explain_results, explain_search, image_files, term_contributions
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.model import D2S


@pytest.fixture(scope="module")
def data():
    return load_pairs("coco500").evaluation_split()  # the 50 test images


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory, vocab):
    torch.manual_seed(0)
    head = D2SHead(D2SHeadConfig(input_dim=512, hidden_dim=384), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(-1.5)
    path = tmp_path_factory.mktemp("head") / "h"
    head.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(head_dir):
    return D2S.from_pretrained(head_dir)


@pytest.fixture(scope="module")
def index(tmp_path_factory, model, data):
    path = tmp_path_factory.mktemp("idx") / "i"
    model.image_indexer(D2SIndex(path), verbose=False).index(data.corpus_iter())
    return D2SIndex(path)


def _results(model, index, data, engine: str, k: int = 5) -> pd.DataFrame:
    pipe = model.query_encoder() >> index.retriever(num_results=k, engine=engine)
    return pipe(data.topics().head(4))


@pytest.mark.parametrize("engine", ["taat", "exact"])
def test_contributions_sum_to_the_engines_scores(model, index, data, engine):
    results = _results(model, index, data, engine)
    terms = term_contributions(results, index)
    assert list(terms.columns[:4]) == ["qid", "docno", "rank", "score"]
    sums = terms.groupby(["qid", "docno"])["contribution"].sum()
    for r in results.itertuples():
        explained = sums[(r.qid, r.docno)]
        assert explained == pytest.approx(r.score, rel=1e-5)  # the engine's (float32) score
        assert explained == pytest.approx(index.score(r.query_toks, [r.docno])[0], rel=1e-6)  # scipy
    assert (terms["contribution"] > 0).all()
    # best first within a result
    for _, g in terms.groupby(["qid", "docno"]):
        assert g["contribution"].is_monotonic_decreasing


def test_contributions_equal_a_brute_force(model, index, data):
    results = _results(model, index, data, "taat", k=2)
    terms = term_contributions(results, index)
    r = results.iloc[1]
    # brute force: the image's full sparse vector from the head, intersected with the query's dict by hand
    row = data.image_ids.index(r["docno"])
    image = model.head.to_toks(model.encode_images(data.image_vectors)[row])  # one batch, as indexed
    expected = {t: w * image[t] for t, w in r["query_toks"].items() if t in image}
    mine = terms[(terms["qid"] == r["qid"]) & (terms["docno"] == r["docno"])]
    got = dict(zip(mine["term"], mine["contribution"], strict=True))
    assert got.keys() == expected.keys()
    assert all(got[t] == pytest.approx(expected[t], rel=1e-6) for t in got)


def test_hand_computed_contributions(tmp_path):
    index = D2SIndex(tmp_path / "tiny")
    index.index_matrix(["a", "b"], _csr([[2.0, 0.5, 0.0], [0.0, 1.0, 3.0]]), ["dog", "park", "cat"])
    results = pd.DataFrame(
        {
            "qid": ["q", "q"],
            "docno": ["a", "b"],
            "score": [2.5, 3.0],
            "rank": [0, 1],
            "query_toks": [{"dog": 1.0, "park": 1.0, "zebra": 9.0}, {"park": 1.0, "cat": 0.5}],
        }
    )
    terms = term_contributions(results, index)
    assert terms[["docno", "term", "contribution"]].values.tolist() == [
        ["a", "dog", 2.0],
        ["a", "park", 0.5],
        ["b", "cat", 1.5],
        ["b", "park", 1.0],
    ]
    with pytest.raises(ValueError, match=r"missing \['query_toks'\]"):
        term_contributions(results.drop(columns="query_toks"), index)
    with pytest.raises(KeyError, match="'zz'"):
        term_contributions(results.assign(docno=["a", "zz"]), index)


def _csr(rows):
    import scipy.sparse as sp

    return sp.csr_matrix(np.asarray(rows, dtype=np.float32))


class _Page(HTMLParser):
    """Collects the docnos shown, the images, and checks that every opened element is closed in order."""

    VOID = {"meta", "img", "br", "link"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.docnos: list[str] = []
        self.images: list[dict] = []
        self._in_docno = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)
        self._in_docno = attrs.get("class") == "d2s-docno"

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> closes nothing open"
        self._in_docno = False

    def handle_data(self, data):
        if self._in_docno:
            self.docnos.append(data)


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    assert p.stack == [], f"unclosed elements: {p.stack}"
    return p


def test_html_names_every_result_and_shows_thumbnails(model, index, data, tmp_path):
    results = _results(model, index, data, "taat")
    docnos = [str(d) for d in results["docno"]]
    pictures = {}
    for i, docno in enumerate(docnos[:2]):
        pictures[docno] = tmp_path / f"{docno}.png"
        Image.new("RGB", (320, 200), (40 * i, 120, 200)).save(pictures[docno])
    pictures["not-a-result"] = tmp_path / "x.png"
    explained = explain_results(results, index, images=pictures)
    page = _parse(explained.html_page("results"))
    assert page.docnos == docnos  # every result, in rank order
    pictured = [d for d in docnos if d in pictures]  # a docno can be a result of several queries
    assert [i["alt"] for i in page.images] == [f"image {d}" for d in pictured]
    assert all(i["src"].startswith("data:image/jpeg;base64,") for i in page.images)
    fragment = _parse(explained._repr_html_())
    assert fragment.docnos == docnos
    top = explained.top_terms(results["qid"].iloc[0], docnos[0], k=1)["term"].iloc[0]
    assert f'<span class="d2s-label">{top}</span>' in explained._repr_html_()


def test_html_escapes_and_tells_unmatched(tmp_path):
    index = D2SIndex(tmp_path / "tiny")
    index.index_matrix(["<b>x</b>"], _csr([[1.0, 0.0]]), ["dog", "cat"])
    results = pd.DataFrame(
        {"qid": ["q"], "query": ["<script>"], "docno": ["<b>x</b>"], "score": [0.0], "rank": [0]}
    ).assign(query_toks=[{"cat": 1.0}])
    page = explain_results(results, index).html_page()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "no term shared with the query" in page
    assert _parse(page).docnos == ["<b>x</b>"]


def test_image_files_follow_images_jsonl(tmp_path):
    data = load_pairs("coco500")
    first = data.meta["images"][0]
    (tmp_path / first["file"]).parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / first["file"])
    assert image_files(data, tmp_path) == {first["image_id"]: tmp_path / first["file"]}


def test_cli_search_explain_and_html(index, head_dir, data, tmp_path, capsys):
    qid = data.caption_ids[3]
    argv = [
        "search",
        "--model",
        head_dir,
        "--index",
        index.path,
        "--data",
        "coco500",
        "--qid",
        qid,
        "-k",
        "3",
    ]
    page_file = tmp_path / "out" / "page.html"
    assert main([str(a) for a in [*argv, "--explain", "--html", page_file]]) == 0
    out = capsys.readouterr().out
    records = json.loads(out.strip().splitlines()[-1])
    assert len(records) == 3
    for rec in records:
        assert rec["explained"] == pytest.approx(rec["score"], rel=1e-5)
        assert rec["terms"] and f"{rec['terms'][0]['term']} " in out
    assert _parse(page_file.read_text()).docnos == [r["docno"] for r in records]
    assert data.caption_texts[3] in page_file.read_text()
    with pytest.raises(ValueError, match="--images needs --data"):
        explain_search(pd.DataFrame(), index.path, images=tmp_path)
