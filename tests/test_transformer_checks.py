"""PyTerrier's own checks of every public transformer: ``pyterrier.testing.TransformerTestCase``.

``test_inspect_io`` runs as PyTerrier wrote it. ``test_schematic`` too, except that the link to PyTerrier's
documentation index (``pt.documentation.url_for_class``, which downloads ``objects.inv``) is answered with
``None`` offline: the schematic is still built, its label checked and drawn.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import unittest
from unittest import mock

import numpy as np
import pyterrier as pt
import torch
from pyterrier import testing as pt_testing

from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.image_indexer import D2SImageIndexer
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.model import D2S
from pyterrier_d2s.vocab import Vocabulary

_STATE: dict = {}
os.environ.setdefault("PT_TEST_TRANSFORMER_REPORTS", "0")  # PyTerrier's per-class report, as a warning


def _online() -> bool:
    """Whether PyTerrier's documentation host can be reached (never in the offline test environment)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("pyterrier.readthedocs.io", 443), timeout=1).close()
        return True
    except OSError:
        return False


def _model() -> D2S:
    if "model" not in _STATE:
        torch.manual_seed(0)
        head = D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=4, init="random"), vocab=Vocabulary())
        _STATE["model"] = D2S(head)
    return _STATE["model"]


def _index() -> D2SIndex:
    """A three-document index in a temporary directory (built once for the module)."""
    if "index" not in _STATE:
        tmp = tempfile.mkdtemp(prefix="d2s-ptcheck-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        docs = [{"docno": f"d{i}", "doc_vec": np.random.default_rng(i).normal(size=8)} for i in range(3)]
        D2SImageIndexer(_model(), D2SIndex(f"{tmp}/idx"), verbose=False).index(docs)
        _STATE["index"] = D2SIndex(f"{tmp}/idx")
    return _STATE["index"]


class _Checks(pt_testing.TransformerTestCase):
    """PyTerrier's checks, with the documentation lookup of ``test_schematic`` answered offline."""

    __test__ = False  # a base: pytest collects its subclasses, which set it back

    def test_schematic(self):
        if _online():
            return super().test_schematic()
        with mock.patch.object(pt.documentation, "url_for_class", return_value=None):
            return super().test_schematic()


class TestQueryEncoder(_Checks):
    __test__ = True

    @staticmethod
    def get_transformer():
        return _model().query_encoder()


class TestImageIndexer(_Checks):
    __test__ = True

    @staticmethod
    def get_transformer():
        return _model().image_indexer(_index())


class TestExpansionRescorer(_Checks):
    __test__ = True

    @staticmethod
    def get_transformer():
        return _model().rescorer(_index())


class TestRetriever(_Checks):
    __test__ = True

    @staticmethod
    def get_transformer():
        return _index().retriever(num_results=2)


class TestScorer(_Checks):
    __test__ = True

    @staticmethod
    def get_transformer():
        return _index().scorer()


class TestAdaptiveRetriever(_Checks):
    __test__ = True

    @staticmethod
    def get_transformer():
        return _index().adaptive_retriever(num_results=2)


class TestIndexer(_Checks):
    __test__ = True

    @staticmethod
    def get_transformer():
        return _index().indexer()


def test_inspected_columns_are_the_documented_ones():
    """What the inspections report, against the columns each transformer's docstring names."""
    model, index = _model(), _index()
    assert pt.inspect.transformer_inputs(model.image_indexer(index)) == [
        ["docno", "doc_vec"],
        ["docno", "image"],
    ]
    assert pt.inspect.indexer_inputs(model.image_indexer(index)) == [["docno", "doc_vec"], ["docno", "image"]]
    out = pt.inspect.transformer_outputs(model.query_encoder(), ["qid", "query"])
    assert out == ["qid", "query", "query_toks"]
    out = pt.inspect.transformer_outputs(index.retriever(), ["qid", "query_toks"])
    assert {"qid", "docno", "score", "rank"} <= set(out)


if __name__ == "__main__":  # pragma: no cover
    unittest.main()
