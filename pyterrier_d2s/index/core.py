"""The D2S index artifact: a forward store of the exact float sparse vectors, its metadata and one cache.

:class:`D2SIndex` knows its directory and files, nothing of how it is searched or built: the modules that
implement those attach their methods to it (as pyterrier-dr's ``FlexIndex`` does), so imports run one way,
from them to this module:

- :mod:`.building`: ``indexer()``, ``index()``, ``index_matrix()``, ``index_inputs()``;
- :mod:`.engines`: ``engine()``;
- :mod:`.retrievers`: ``retriever()``, ``scorer()``;
- :mod:`.adaptive`: ``adaptive_retriever()``.

``pyterrier_d2s.index`` imports all of them, so the methods always exist on an imported ``D2SIndex``. Whatever
those modules derive from the index (engine objects, the kernels' arrays) goes into the index's one cache,
:meth:`D2SIndex.cached`, which :meth:`D2SIndex.invalidate` empties (a rebuild does).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyterrier as pt
import pyterrier_alpha as pta

from .forward import DOCNOS_FILE, FORWARD_FILE, TERMS_FILE, ForwardStore
from .integrity import IndexDamaged, check_csr, check_files

if TYPE_CHECKING:  # pragma: no cover - the attached methods, for type checkers
    from .adaptive import D2SAdaptiveRetriever
    from .building import D2SIndexer
    from .engines import Engine
    from .retrievers import D2SRetriever, D2SScorer

META_FILE = "pt_meta.json"
_REQUIRED_FILES = (META_FILE, FORWARD_FILE, TERMS_FILE, DOCNOS_FILE)

#: Engine of :meth:`D2SIndex.retriever` when none is named: the fastest exact engine on expanded queries in
#: ``benchmarks/latency.py`` (see README, "Engines"); ``"exact"`` (scipy) stands in if numba cannot be imported.
DEFAULT_ENGINE = "taat"

T = TypeVar("T")


class D2SIndex(pta.Artifact, pt.Indexer):
    """A learned-sparse index for D2S vectors: the exact float vectors and the engines that search them.

    The directory holds ``forward.npz`` (CSR float32, documents x terms), ``terms.txt``, ``docnos.txt``,
    ``manifest.json`` and ``pt_meta.json`` (type ``sparse_index``, format ``d2s``, with collection
    statistics). Engines with files of their own (``taat``, ``pisa``, ``seismic``) add them under
    ``engines/`` on first use (see :meth:`retriever`); an index without that directory is complete. Scores
    from every engine are in float dot-product units.

    Args:
        path: the index directory.
        verbose: show progress bars.
    """

    ARTIFACT_TYPE = "sparse_index"
    ARTIFACT_FORMAT = "d2s"
    ARTIFACT_PACKAGE_HINT = "pyterrier-d2s"

    if TYPE_CHECKING:  # pragma: no cover - attached by the modules named in the module docstring
        indexer: Callable[..., D2SIndexer]
        index_matrix: Callable[..., D2SIndex]
        engine: Callable[..., Engine]
        retriever: Callable[..., D2SRetriever]
        scorer: Callable[..., D2SScorer]
        adaptive_retriever: Callable[..., D2SAdaptiveRetriever]

    def __init__(self, path: str | os.PathLike, *, verbose: bool = True):
        super().__init__(path)
        self.path = Path(path)
        self.verbose = verbose
        self._cache: dict[Hashable, Any] = {}
        self._cache_lock = threading.RLock()

    # ---- the one cache ----------------------------------------------------------------------------------
    def cached(self, key: Hashable, factory: Callable[[], T]) -> T:
        """The value cached under ``key``, made by ``factory()`` on first use (once, also across threads).

        Every module that derives something from the index keeps it here (keys start with the module's or
        engine's name), so that :meth:`invalidate` drops all of it at once.
        """
        try:
            return self._cache[key]  # the hot path (a retriever asks per call): no lock
        except KeyError:
            pass
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = factory()
            return self._cache[key]

    def invalidate(self) -> None:
        """Forget everything loaded or derived from the files (after a rebuild of the directory)."""
        with self._cache_lock:
            self._cache.clear()

    # ---- state ------------------------------------------------------------------------------------------
    def built(self) -> bool:
        """Whether a complete D2S index is at ``path`` (metadata of the right format and every component)."""
        try:
            meta = json.loads((self.path / META_FILE).read_text())
        except (OSError, ValueError):
            return False
        if meta.get("type") != self.ARTIFACT_TYPE or meta.get("format") != self.ARTIFACT_FORMAT:
            return False
        return all((self.path / f).exists() for f in _REQUIRED_FILES)

    def require_built(self) -> None:
        """Raise :class:`FileNotFoundError` unless :meth:`built`."""
        if not self.built():
            raise FileNotFoundError(f"no built D2S index at {str(self.path)!r}")

    @property
    def meta(self) -> dict:
        """The contents of ``pt_meta.json``."""
        return self.cached("meta", self._read_meta)

    def _read_meta(self) -> dict:
        self.require_built()
        return json.loads((self.path / META_FILE).read_text())

    def forward(self) -> ForwardStore:
        """The forward store: ``.matrix`` (CSR float32 docs x terms), ``.terms``, ``.docnos``."""
        return self.cached("forward", self._load_forward)

    def _load_forward(self) -> ForwardStore:
        self.require_built()
        # sizes of all three files, and the hashes of the two whose damage would mislabel results
        check_files(self.path, [FORWARD_FILE, TERMS_FILE, DOCNOS_FILE], hashed=(TERMS_FILE, DOCNOS_FILE))
        try:
            store = ForwardStore.load(self.path)
        except IndexDamaged:
            raise
        except Exception as e:  # a damaged .npz: BadZipFile, ValueError, KeyError, EOFError...
            raise IndexDamaged(
                f"{self.path / FORWARD_FILE}: unreadable ({type(e).__name__}: {e}); rebuild the index"
            ) from e
        check_csr(store.matrix, (len(store.docnos), len(store.terms)), str(self.path / FORWARD_FILE))
        return store

    def __len__(self) -> int:
        return int(self.meta["num_docs"])

    def __repr__(self) -> str:
        return f"D2SIndex({str(self.path)!r})"

    # ---- scoring ----------------------------------------------------------------------------------------
    def score(self, query_toks: Mapping[str, float], docnos: Sequence[str]) -> np.ndarray:
        """Exact float dot products of one query with the stored vectors of ``docnos``.

        Raises:
            KeyError: naming the docnos that are not in the index.
        """
        fwd = self.forward()
        rows = fwd.rows(list(docnos))
        q = fwd.query_matrix([dict(query_toks)])
        return np.asarray((fwd.matrix[rows] @ q.T).todense(), dtype=np.float64).ravel()
