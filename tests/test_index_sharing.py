"""Indexes shared the PyTerrier way: ``pta.Artifact``'s ``build_package`` / ``from_url`` and ``to_hf`` /
``from_hf`` on a D2SIndex, offline.

``to_hf`` calls ``huggingface_hub``'s module functions (``create_repo``, ``create_branch``, ``upload_folder``);
they are replaced by ones that copy the uploaded folder into a local directory, which a local HTTP server
(127.0.0.1) serves; ``from_hf``'s ``hf:`` URL resolver is pointed at that server. Everything between (the
package, its metadata and SHA-256, the download, the unpacking into PyTerrier's artifact cache) is PyTerrier's.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import huggingface_hub
import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import pytest
import scipy.sparse as sp

from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.indexing import check_index


def _index(path: Path) -> D2SIndex:
    rng = np.random.default_rng(0)
    dense = rng.random((40, 30)) * (rng.random((40, 30)) < 0.3)
    terms = [f"t{i}" for i in range(30)]
    index = D2SIndex(path, verbose=False)
    index.index_matrix([f"d{i}" for i in range(40)], sp.csr_matrix(dense.astype(np.float32)), terms)
    return index


def _queries() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    toks = [{f"t{j}": float(rng.random()) for j in rng.choice(30, 6, replace=False)} for _ in range(5)]
    return pd.DataFrame({"qid": [str(i) for i in range(5)], "query_toks": toks})


def _search(index: D2SIndex, engine: str) -> pd.DataFrame:
    return index.retriever(num_results=10, engine=engine)(_queries())[["qid", "docno", "score", "rank"]]


@pytest.fixture
def served(tmp_path):
    """A directory served over HTTP on 127.0.0.1 (the stand-in for the Hub's file server); its base URL."""
    root = tmp_path / "remote"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(autouse=True)
def _pyterrier_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTERRIER_HOME", str(tmp_path / "pthome"))  # the artifact cache from_url fills


def test_package_and_unpackage_search_identically(tmp_path, served):
    root, base = served
    index = _index(tmp_path / "idx.d2s")
    before = {e: _search(index, e) for e in ("taat", "exact")}  # taat writes its files under engines/
    package = index.build_package(str(root / "artifact.tar.lz4"), verbose=False)
    assert Path(package).is_file() and (root / "artifact.tar.lz4.json").is_file()  # with its SHA-256
    again = pta.Artifact.from_url(f"{base}/artifact.tar.lz4")
    assert isinstance(again, D2SIndex) and again.path != index.path
    for engine, expected in before.items():
        pd.testing.assert_frame_equal(_search(again, engine), expected)
    pd.testing.assert_frame_equal(_search(again, "pisa"), _search(index, "pisa"))  # built after unpacking
    assert check_index(again.path)["ok"]  # every file as its build's manifest recorded (SHA-256)


def test_to_hf_then_from_hf(tmp_path, served, monkeypatch):
    root, base = served
    calls = []

    def upload_folder(repo_id, folder_path, repo_type, revision):
        calls.append(("upload", repo_id, repo_type, revision))
        shutil.copytree(folder_path, root / repo_id / revision, dirs_exist_ok=True)
        return f"{base}/{repo_id}/{revision}"

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo, **kw: calls.append(("repo", repo, kw)))
    monkeypatch.setattr(
        huggingface_hub, "create_branch", lambda repo, **kw: calls.append(("branch", repo, kw))
    )
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)

    def resolver(parsed):  # what pyterrier's hf: resolver does, with the local server for huggingface.co
        repo, _, ref = parsed.path.partition("@")
        return f"{base}/{repo}/{ref or 'main'}/artifact.tar.lz4"

    monkeypatch.setattr(pt._artifact, "_hf_url_resolver", resolver)
    index = _index(tmp_path / "idx.d2s")
    expected = _search(index, "taat")
    index.to_hf("me/coco.d2s", pretty_name="a D2S test index")
    assert ("upload", "me/coco.d2s", "dataset", "main") in calls
    card = (root / "me/coco.d2s/main/README.md").read_text()
    assert "a D2S test index" in card and "pyterrier-d2s" in card  # PyTerrier's card names the package
    again = pta.Artifact.from_hf("me/coco.d2s")
    assert isinstance(again, D2SIndex) and len(again) == 40
    pd.testing.assert_frame_equal(_search(again, "taat"), expected)
    assert again.meta["num_docs"] == index.meta["num_docs"]
