"""Everything this package knows of pyterrier-pisa's internals, in one place (the supported versions below).

The PISA engine writes its collection in pyterrier-pisa's uncompressed on-disk format (vectorised here, where
pyterrier-pisa's toks indexer loops in Python over every posting), lets pyterrier-pisa compress it, and calls
its ``_pisathon`` extension directly at query time. All of that depends on pyterrier-pisa details that are not
its public API: this module holds them, and ``tests/test_index.py`` pins them (supported version, and the
writer byte-identical to ``PisaIndex(...).toks_indexer(...)``). Nothing else imports pyterrier_pisa.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...forward import write_lines

logger = logging.getLogger(__name__)

#: pyterrier-pisa versions this adapter was checked against: ``[first, end)``.
SUPPORTED_VERSIONS: tuple[str, str] = ("0.4.9", "0.5")

_POS = "_d2s_qpos"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def installed_version() -> str:
    """The installed pyterrier-pisa version."""
    return importlib.metadata.version("pyterrier-pisa")


def version_supported(version: str) -> bool:
    """Whether ``version`` lies in :data:`SUPPORTED_VERSIONS`."""
    first, end = SUPPORTED_VERSIONS
    return _version_key(first) <= _version_key(version) < _version_key(end)


def query_algorithm(name: str) -> str:
    """PISA's name of query algorithm ``name`` (ValueError for an unknown one)."""
    from pyterrier_pisa import PisaQueryAlgorithm

    return PisaQueryAlgorithm(name).value


@contextmanager
def native_output_held() -> Iterator[None]:
    """Hold what native code writes to fds 1 and 2 in a temporary file; replay it only if the block fails.

    PISA's C++ side logs each build step to stdout and a progress line per percent to stderr (several hundred
    lines per index in a log file or CI output; ``pyterrier_pisa.log_level`` fails on pyterrier-pisa 0.4.9:
    its extension has no ``log_level``). Python output of other threads in that window is held too.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as held:
        try:
            os.dup2(held.fileno(), 1)
            os.dup2(held.fileno(), 2)
            yield
        except BaseException:
            os.dup2(saved[1], 2)
            held.seek(0)
            os.write(2, held.read())  # the native log explains the failure
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


# ---- the collection -----------------------------------------------------------------------------------------


def _posting_lists(impacts: sp.csr_matrix, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(docs, freqs) of ``inv.docs``/``inv.freqs``: each list ``[length, items...]`` of the terms ``order``."""
    postings = impacts.tocsc()
    postings.sort_indices()
    lens = np.diff(postings.indptr)[order]
    starts = postings.indptr[order]
    out_len = int(lens.sum()) + len(order)
    heads = np.zeros(len(order), dtype=np.int64)
    if len(order):
        heads[1:] = np.cumsum(lens + 1)[:-1]
    is_head = np.zeros(out_len, dtype=bool)
    is_head[heads] = True
    # source position of each non-head slot: list start + offset within list (all lists in one gather)
    src = np.repeat(starts - (heads + 1), lens) + np.flatnonzero(~is_head)
    docs = np.empty(out_len, dtype=np.uint32)
    freqs = np.empty(out_len, dtype=np.uint32)
    docs[heads] = lens
    freqs[heads] = lens
    docs[~is_head] = postings.indices[src]
    freqs[~is_head] = postings.data[src]
    return docs, freqs


def write_collection(path: Path, impacts: sp.csr_matrix, terms: np.ndarray, docnos: np.ndarray) -> dict:
    """Write integer ``impacts`` (documents x terms, no explicit zeros) as an uncompressed PISA collection.

    The files (``inv.docs/.freqs/.sizes``, ``fwd.documents/.terms``, their binary lexicons and
    ``pt_meta.json``) are byte-identical to what ``PisaIndex(path, stemmer='none').toks_indexer(...)`` writes
    for the same impacts (a test checks this). Terms without postings are left out of PISA's lexicon, as the
    toks indexer does; PISA compresses the collection into its block index on first use (:func:`warm`).

    Returns:
        statistics: ``pisa_terms`` and ``pisa_postings``.
    """
    from pyterrier_pisa import _pisathon

    path.mkdir(parents=True, exist_ok=True)
    df = np.diff(impacts.tocsc().indptr)
    # PISA's lexicon is sorted; numpy's unicode sort is by code point, as Python's sorted() used by the toks indexer.
    order = np.argsort(terms, kind="stable")
    order = order[df[order] > 0]
    docs, freqs = _posting_lists(impacts, order)
    ndocs = impacts.shape[0]
    with open(path / "inv.docs", "wb") as f:
        f.write(np.array([1, ndocs], dtype=np.uint32).tobytes())
        f.write(docs.tobytes())
    with open(path / "inv.freqs", "wb") as f:
        f.write(freqs.tobytes())
    with open(path / "inv.sizes", "wb") as f:
        f.write(np.array([ndocs], dtype=np.uint32).tobytes())
        f.write(np.asarray(impacts.sum(axis=1)).ravel().astype(np.uint32).tobytes())
    write_lines(path / "fwd.documents", docnos)
    write_lines(path / "fwd.terms", terms[order])
    _pisathon.build_binlex(str(path / "fwd.documents"), str(path / "fwd.doclex"))
    _pisathon.build_binlex(str(path / "fwd.terms"), str(path / "fwd.termlex"))
    with open(path / "pt_meta.json", "w") as f:
        json.dump(
            {"type": "sparse_index", "format": "pisa", "package_hint": "pyterrier-pisa", "stemmer": "none"}, f
        )
    return {"pisa_terms": int(len(order)), "pisa_postings": int(df[order].sum())}


def _retrieve(path: Path, num_results: int, **kwargs: Any):
    from pyterrier_pisa import PisaIndex, PisaRetrieve

    return PisaRetrieve(
        PisaIndex(str(path), stemmer="none"),
        scorer="quantized",
        num_results=num_results,
        # BERT's vocabulary contains stopwords ("a", "the"): they are real terms here
        stops="none",
        **kwargs,
    )


def warm(path: Path) -> None:
    """Let PISA compress the collection at ``path`` and write its block-max metadata now (it does on first query)."""
    with native_output_held():
        _retrieve(path, 1)


# ---- queries ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PisaResults:
    """PISA's output for a batch: parallel arrays (query position, docno, 0-based rank, integer-unit score)."""

    qpos: np.ndarray
    docnos: np.ndarray
    ranks: np.ndarray
    scores: np.ndarray


class Searcher:
    """A loaded PISA collection answering batches of pre-quantised queries (``{term: copies}`` dicts)."""

    def __init__(self, path: Path):
        self.path = path
        # weights are quantised by the caller, in float64, so PISA must not rescale them (numpy 2 would
        # multiply a float32 weight in float32 and floor differently)
        self._retrieve = _retrieve(path, 10, toks_scale=1.0)

    def search(
        self, queries: Sequence[dict[str, float]], k: int, *, algorithm: str, threads: int
    ) -> PisaResults:
        """PISA's top ``k`` of each query (the order of queries in the output is not defined)."""
        from pyterrier_pisa import _pisathon

        self._retrieve.reset_retrieval_context()
        size = len(queries) * k
        try:
            # Direct call into pyterrier-pisa's extension (as PisaRetrieve.transform does): going through
            # PisaRetrieve's DataFrame plumbing costs ~1.3 ms per call, 10x PISA's own time on short queries.
            out = PisaResults(
                np.empty(size, dtype=np.int32),
                np.empty(size, dtype=object),
                np.empty(size, dtype=np.int32),
                np.empty(size, dtype=np.float32),
            )
            n = _pisathon.retrieve(
                self._retrieve._ctxt,
                algorithm,
                [(i, q) for i, q in enumerate(queries) if q],
                k=k,
                threads=threads,
                query_weighted=1,
                pretokenised=True,
                result_qidxs=out.qpos,
                result_docnos=out.docnos,
                result_ranks=out.ranks,
                result_scores=out.scores,
            )
            return PisaResults(out.qpos[:n], out.docnos[:n], out.ranks[:n], out.scores[:n])
        except (AttributeError, TypeError) as e:  # pragma: no cover - a pyterrier-pisa API change
            logger.debug("falling back to PisaRetrieve.transform: %s", e)
            return self._search_through_transform(queries, k, algorithm=algorithm, threads=threads)

    def _search_through_transform(
        self, queries: Sequence[dict[str, float]], k: int, *, algorithm: str, threads: int
    ) -> PisaResults:  # pragma: no cover - a pyterrier-pisa API change
        retr = _retrieve(self.path, k, threads=threads, query_algorithm=algorithm, toks_scale=1.0)
        frame = pd.DataFrame(
            {
                "qid": [str(i) for i in range(len(queries))],
                "query_toks": list(queries),
                _POS: range(len(queries)),
            }
        )
        res = retr.transform(frame)
        return PisaResults(
            res[_POS].to_numpy(),
            res["docno"].to_numpy(dtype=object),
            res["rank"].to_numpy(),
            res["score"].to_numpy(),
        )


# ---- BM25 over text (a baseline beside the learned sparse systems) -------------------------------------------


def bm25_text_retriever(path: Path, documents: pd.DataFrame, num_results: int = 1000, threads: int = 1):
    """PISA's BM25 over ``documents`` (``docno``, ``text``), indexed at ``path`` (overwritten): a PyTerrier
    transformer ``qid, query`` -> results. Porter2 stemming, no stopword list, k1 = 0.9, b = 0.4 (PISA's)."""
    from pyterrier_pisa import PisaIndex

    index = PisaIndex(str(path), text_field="text", stemmer="porter2", threads=threads, overwrite=True)
    with native_output_held():
        index.indexer(mode="overwrite").index(documents[["docno", "text"]].to_dict("records"))
        retriever = index.bm25(num_results=num_results, threads=threads)  # compresses the index: PISA logs
    return _NativeOutputHeld(retriever)


class _NativeOutputHeld:
    """A PyTerrier transformer running ``inner`` with PISA's native log held (its first query compresses the
    index and logs every step to stdout, where a script's last-line JSON must stay last)."""

    def __new__(cls, inner):
        import pyterrier as pt

        def run(frame: pd.DataFrame) -> pd.DataFrame:
            with native_output_held():
                return inner(frame)

        return pt.apply.generic(run)
