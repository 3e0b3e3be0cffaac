"""The forward store of a D2S index: the exact float32 sparse vectors, their terms and docnos, on disk and loaded."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

FORWARD_FILE = "forward.npz"
TERMS_FILE = "terms.txt"
DOCNOS_FILE = "docnos.txt"

# Largest query weight accepted (D2S weights are log(1 + x), below ~20): float32 scores stay finite.
MAX_QUERY_WEIGHT = 1e15


_warned_case = False


def warn_unindexable_query_term(term: str) -> None:
    """Warn (once per process) about an unknown query term that is not lower-case: likely a casing bug upstream."""
    global _warned_case
    if not _warned_case and isinstance(term, str) and term != term.lower():
        _warned_case = True
        logger.warning(
            "query term %r is not lower-case; indexed terms are all lower-case, so it is ignored", term
        )


@dataclass
class ForwardStore:
    """The exact float32 sparse vectors of an index.

    Attributes:
        matrix: CSR float32, one row per document (index order), one column per term of ``terms``.
        terms: the column vocabulary.
        docnos: the document identifiers, in row order.
    """

    matrix: sp.csr_matrix
    terms: np.ndarray
    docnos: np.ndarray

    @cached_property
    def term_index(self) -> dict[str, int]:
        """term -> column."""
        return {t: i for i, t in enumerate(self.terms.tolist())}

    @cached_property
    def docno_array(self) -> pd.api.extensions.ExtensionArray:
        """``docnos`` as a pandas array of the dtype pandas infers for strings (``str`` in pandas 3, ``object``
        before): result frames take from it instead of converting every docno string again."""
        return pd.array(self.docnos.astype(object), dtype=pd.Series(["docno"]).dtype)

    @cached_property
    def docno_index(self) -> dict[str, int]:
        """docno -> row."""
        return {d: i for i, d in enumerate(self.docnos.tolist())}

    @cached_property
    def transposed(self) -> sp.csr_matrix:
        """terms x docs CSR (i.e. posting lists), for exhaustive exact retrieval."""
        return self.matrix.T.tocsr()

    @cached_property
    def doc_freq(self) -> np.ndarray:
        """Number of documents with a positive weight on each term (column)."""
        return np.bincount(self.matrix.indices[self.matrix.data > 0], minlength=len(self.terms))

    @cached_property
    def term_max_array(self) -> np.ndarray:
        """Largest document weight of each term (column), float32; 0 for a term no document has."""
        term_max = np.zeros(self.matrix.shape[1], dtype=np.float32)
        if self.matrix.nnz:
            np.maximum.at(term_max, self.matrix.indices, self.matrix.data)
        return term_max

    @cached_property
    def term_max(self) -> dict[str, float]:
        """term -> largest document weight (used by the quantisation error bound)."""
        return dict(zip(self.terms.tolist(), self.term_max_array.astype(np.float64).tolist(), strict=True))

    def columns_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The columns (ascending, distinct) in which some of the documents ``rows`` has a stored entry."""
        m = self.matrix
        rows = np.asarray(rows, dtype=np.int64)
        starts, lens = m.indptr[rows], m.indptr[rows + 1] - m.indptr[rows]
        ends = np.cumsum(lens)
        # positions of the rows' entries in m.indices, without a Python loop over the rows
        src = np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if len(ends) else 0)
        seen = np.zeros(m.shape[1], dtype=bool)  # a mark per column: cheaper than sorting the entries
        seen[m.indices[src]] = True
        return np.flatnonzero(seen)

    def rows(self, docnos: list[str] | np.ndarray) -> np.ndarray:
        """Row numbers of ``docnos``.

        Raises:
            KeyError: naming (up to 5 of) the docnos that are not in the index.
        """
        index = self.docno_index
        rows = np.fromiter((index.get(d, -1) for d in docnos), dtype=np.int64, count=len(docnos))
        if (rows < 0).any():
            missing = [str(d) for d, r in zip(docnos, rows, strict=True) if r < 0]
            shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise KeyError(f"{len(missing)} docno(s) not in the index: {shown}")
        return rows

    def query_arrays(
        self, queries: Iterable[Mapping[str, float]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``{term: weight}`` dicts as CSR arrays over ``terms``: (indptr int64, columns int32, weights float32).

        Columns are sorted within a row; unknown terms (warned about if not lower-case) and weights <= 0 drop
        out. Vectorised: one dict lookup per term, no per-term Python arithmetic.

        Raises:
            TypeError: if a query is not a dict.
            ValueError: on a NaN or infinite weight (of a known term).
        """
        queries = list(queries)
        lens = np.empty(len(queries), dtype=np.int64)
        for i, q in enumerate(queries):
            if not isinstance(q, Mapping):
                raise TypeError(f"query_toks must be a dict of {{term: weight}}, got {type(q).__name__}")
            lens[i] = len(q)
        total = int(lens.sum())
        keys = [k for q in queries for k in q]
        weights = np.fromiter(chain.from_iterable(q.values() for q in queries), dtype=np.float64, count=total)
        cols = np.fromiter(map(self.term_index.get, keys, repeat(-1)), dtype=np.int64, count=total)
        known = cols >= 0
        if not known.all():
            for i in np.flatnonzero(~known):
                warn_unindexable_query_term(keys[i])
        # engines score in float32: a weight near its limit (3.4e38) would turn scores into inf
        bad = known & ~(np.abs(weights) <= MAX_QUERY_WEIGHT)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"query weight of {keys[i]!r} is not finite or above {MAX_QUERY_WEIGHT:g}: {weights[i]}"
            )
        keep = known & (weights > 0)
        rows = np.repeat(np.arange(len(queries)), lens)[keep]
        cols, weights = cols[keep], weights[keep]
        order = np.lexsort((cols, rows))  # a dict has each term once, so a row has no duplicate columns
        indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=len(queries)))].astype(np.int64)
        return indptr, cols[order].astype(np.int32), weights[order].astype(np.float32)

    def query_matrix(self, queries: Iterable[Mapping[str, float]]) -> sp.csr_matrix:
        """Queries as a CSR float32 matrix over ``terms`` (see :meth:`query_arrays`)."""
        indptr, cols, weights = self.query_arrays(queries)
        return sp.csr_matrix((weights, cols, indptr), shape=(len(indptr) - 1, len(self.terms)))

    @staticmethod
    def save(path: Path, matrix: sp.csr_matrix, terms: np.ndarray, docnos: np.ndarray) -> None:
        """Write the store into directory ``path``."""
        # Uncompressed: loading speed matters more than a few MB.
        sp.save_npz(path / FORWARD_FILE, matrix, compressed=False)
        write_lines(path / TERMS_FILE, terms)
        write_lines(path / DOCNOS_FILE, docnos)

    @classmethod
    def load(cls, path: Path) -> ForwardStore:
        """Read the store from directory ``path``."""
        matrix = sp.load_npz(path / FORWARD_FILE).tocsr()
        terms = _read_lines(path / TERMS_FILE)
        docnos = _read_lines(path / DOCNOS_FILE)
        if matrix.shape != (len(docnos), len(terms)):
            raise ValueError(
                f"corrupt forward store at {path}: {matrix.shape} vs {len(docnos)} docnos x {len(terms)} terms"
            )
        return cls(matrix, terms, docnos)


def write_lines(path: Path, items: np.ndarray) -> None:
    """Write one item per line, ``\\n``-terminated, UTF-8 (the format of ``terms.txt`` and ``docnos.txt``)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for item in items.tolist():
            f.write(f"{item}\n")


def _read_lines(path: Path) -> np.ndarray:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1] if text else []
    return np.array(lines, dtype=str) if lines else np.array([], dtype=str)
