"""The D2S index artifact: a PISA index plus a forward store of the exact float sparse vectors."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import scipy.sparse as sp
from tqdm.auto import tqdm

from . import quantisation
from ._store import DOCNOS_FILE, FORWARD_FILE, PISA_DIR, TERMS_FILE, ForwardStore, write_pisa_collection
from .integrity import IndexDamaged, check_csr, check_files, manifest_names, write_manifest

logger = logging.getLogger(__name__)

META_FILE = "pt_meta.json"
_REQUIRED_FILES = (META_FILE, FORWARD_FILE, TERMS_FILE, DOCNOS_FILE, f"{PISA_DIR}/{META_FILE}")

#: Engine of :meth:`D2SIndex.retriever` when none is named: the fastest exact engine on expanded queries in
#: ``benchmarks/latency.py`` (see README, "Engines"); ``"exact"`` (scipy) stands in if numba cannot be imported.
DEFAULT_ENGINE = "taat"


@contextmanager
def _native_output_held() -> Iterator[None]:
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


def _check_term(term: str) -> None:
    # PISA reads lexicons line by line and lower-cases query terms: such terms could never be matched.
    if not term or term != term.strip() or any(c.isspace() for c in term):
        raise ValueError(f"term {term!r} is empty or contains whitespace; PISA cannot index it")
    if term != term.lower():
        raise ValueError(
            f"term {term!r} is not lower-case; PISA lower-cases query terms, so it could never match"
        )


_BUILDER_FILE = ".builder-pid"
_HASH_ON_OPEN_BYTES = 256 * 2**20


def _remove_leftovers_of_killed_builds(target: Path) -> None:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings of ``target`` whose building process is gone."""
    for leftover in [
        *target.parent.glob(f".{target.name}.tmp-*"),
        *target.parent.glob(f".{target.name}.old-*"),
    ]:
        try:
            pid = int((leftover / _BUILDER_FILE).read_text())
        except (OSError, ValueError):
            pid = None  # no pid file: a swap's trash, or a build killed before it wrote one
        if pid is not None and _process_alive(pid):
            continue  # a concurrent build of the same target
        logger.info("removing %s, left by a killed build", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _check_docno(docno: str) -> None:
    if not docno or "\n" in docno or "\r" in docno or "\x00" in docno:
        # docnos.txt holds one per line, and PISA's C strings end at a NUL byte
        raise ValueError(f"docno {docno!r} is empty or contains a line break or a NUL byte")


class D2SIndex(pta.Artifact, pt.Indexer):
    """A learned-sparse index for D2S vectors: a forward store of the exact vectors, PISA, and other engines.

    The directory holds ``pisa/`` (a pyterrier-pisa index, ``stemmer='none'``, quantised impacts),
    ``forward.npz`` (CSR float32, documents x terms), ``terms.txt``, ``docnos.txt`` and ``pt_meta.json``
    (type ``sparse_index``, format ``d2s``, with the quantisation scales and statistics). Engines with files of
    their own (``taat``, ``seismic``) add them under ``engines/`` on first use (see :meth:`retriever`); an index
    without that directory (e.g. built by an earlier version) is complete.

    Scores from every engine are in float dot-product units: PISA's integer scores are divided by
    ``doc_scale * query_scale`` (see :mod:`pyterrier_d2s.index.quantisation` for the error bound).

    Args:
        path: the index directory.
        verbose: show progress bars.
    """

    ARTIFACT_TYPE = "sparse_index"
    ARTIFACT_FORMAT = "d2s"
    ARTIFACT_PACKAGE_HINT = "pyterrier-d2s"

    def __init__(self, path: str | os.PathLike, *, verbose: bool = True):
        super().__init__(path)
        self.path = Path(path)
        self.verbose = verbose
        self._meta: dict | None = None
        self._forward: ForwardStore | None = None
        self._pisa = None

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

    def _require_built(self) -> None:
        if not self.built():
            raise FileNotFoundError(f"no built D2S index at {str(self.path)!r}")

    @property
    def meta(self) -> dict:
        """The contents of ``pt_meta.json``."""
        if self._meta is None:
            self._require_built()
            self._meta = json.loads((self.path / META_FILE).read_text())
        return self._meta

    @property
    def doc_scale(self) -> float:
        """Document quantisation scale ``s``."""
        return float(self.meta["doc_scale"])

    @property
    def query_scale(self) -> float:
        """Default query quantisation scale ``t``."""
        return float(self.meta["query_scale"])

    def forward(self) -> ForwardStore:
        """The forward store: ``.matrix`` (CSR float32 docs x terms), ``.terms``, ``.docnos``."""
        if self._forward is None:
            self._require_built()
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
            self._forward = store
        return self._forward

    def pisa_index(self):
        """The underlying :class:`pyterrier_pisa.PisaIndex` (quantised impacts; scores not rescaled)."""
        if self._pisa is None:
            from pyterrier_pisa import PisaIndex

            self._require_built()
            # a truncated PISA file crashes the native code: compare every size with the build's first
            pisa_files = [n for n in manifest_names(self.path) if n.startswith(f"{PISA_DIR}/")]
            size = sum((self.path / n).stat().st_size for n in pisa_files if (self.path / n).is_file())
            # hashes too while that is cheap (a flipped byte can crash PISA as a cut file does); past
            # _HASH_ON_OPEN_BYTES only sizes, and `d2s check` verifies every hash
            check_files(
                self.path, pisa_files, hashed=tuple(pisa_files) if size <= _HASH_ON_OPEN_BYTES else ()
            )
            self._pisa = PisaIndex(str(self.path / PISA_DIR), stemmer="none")
        return self._pisa

    def __len__(self) -> int:
        return int(self.meta["num_docs"])

    def __repr__(self) -> str:
        return f"D2SIndex({str(self.path)!r})"

    # ---- indexing ---------------------------------------------------------------------------------------
    def indexer(
        self,
        scale: float | None = None,
        max_mass_loss: float = 0.005,
        *,
        query_scale: float | None = None,
        overwrite: bool = False,
    ) -> D2SIndexer:
        """An indexer taking dicts with ``docno`` and ``toks`` (``{term: weight}``).

        Args:
            scale: document quantisation scale; ``None`` picks the smallest that loses < ``max_mass_loss``.
            max_mass_loss: largest fraction of weight mass that truncation may lose (documents, and queries
                checked at retrieval time).
            query_scale: default query scale for retrieval; ``None`` uses the document scale (queries come
                from the same head, so their weights have a similar scale).
            overwrite: replace an existing D2S index at ``path``.
        """
        return D2SIndexer(
            self, scale=scale, max_mass_loss=max_mass_loss, query_scale=query_scale, overwrite=overwrite
        )

    def index_inputs(self) -> list[list[str]]:
        """Columns needed by :meth:`index`."""
        return [["docno", "toks"]]

    def index(self, iter_dict: Iterable[Mapping[str, Any]]) -> D2SIndex:
        """Index ``{'docno', 'toks'}`` dicts with the default settings (see :meth:`indexer`)."""
        return self.indexer().index(iter_dict)

    def index_matrix(
        self,
        docnos: Sequence[str] | np.ndarray,
        matrix: sp.spmatrix | sp.sparray,
        terms: Sequence[str] | np.ndarray,
        *,
        scale: float | None = None,
        max_mass_loss: float = 0.005,
        query_scale: float | None = None,
        overwrite: bool = False,
        built_with: dict | None = None,
    ) -> D2SIndex:
        """Index a CSR matrix (documents x terms) directly: the fast path for batch encoders.

        Args:
            docnos: one identifier per row.
            matrix: non-negative weights; columns named by ``terms``.
            terms: column vocabulary (lower-case, no whitespace; unused columns are fine).
            scale, max_mass_loss, query_scale, overwrite: as in :meth:`indexer`.
            built_with: JSON-able provenance stored in ``pt_meta.json`` (e.g. the encoding head's fingerprint).
        """
        return self.indexer(scale, max_mass_loss, query_scale=query_scale, overwrite=overwrite).index_matrix(
            docnos, matrix, terms, built_with=built_with
        )

    # ---- retrieval & scoring ----------------------------------------------------------------------------
    def retriever(
        self,
        num_results: int = 1000,
        engine: str | None = None,
        algorithm: str | None = None,
        threads: int = 1,
        *,
        toks_scale: float | None = None,
        verbose: bool = False,
        **settings: Any,
    ) -> pt.Transformer:
        """A retriever mapping ``qid`` + ``query_toks`` frames to ranked results.

        Engines (one module each under :mod:`pyterrier_d2s.index.engines`; see the README's "Engines" table for
        measured latencies):

        - ``"taat"`` (default): exact top-k; a compiled (numba) pass computes an upper bound of every
          document's score from byte-quantised columns of the popular terms plus the rare terms' posting lists,
          then documents are scored exactly in bound order until no bound can beat the k-th score. The fastest
          engine on expanded queries in ``benchmarks/latency.py`` (and exact), hence the default. Its layout is
          built from the forward store on first use and cached under ``<index>/engines/``.
        - ``"exact"``: exhaustive scipy products over the forward store; the ground truth, and the fallback
          default when numba cannot be imported.
        - ``"pisa"``: PISA dynamic pruning over the quantised impacts (scores within
          :meth:`error_bound` of exact). Settings: ``algorithm`` (default ``maxscore``: PISA's own default
          block-max WAND is 4-5x slower on expanded queries), ``toks_scale``.
        - ``"seismic"``: approximate (pyseismic-lsr, ``pip install 'pyterrier-d2s[seismic]'``), re-scored
          exactly; ``query_cut`` defaults to a value chosen from k and the query length that kept recall@k >=
          0.99 on the benchmark collections (not a guarantee elsewhere).

        Args:
            num_results: results per query (k).
            engine: engine name; ``None`` means ``"taat"``, or ``"pisa"`` when ``algorithm`` or ``toks_scale``
                is given (PISA settings, as before engines existed).
            algorithm: PISA query algorithm (``engine="pisa"`` only).
            threads: threads for batches of queries (results do not depend on it).
            toks_scale: PISA query scale ``t``; ``None`` uses the index's ``query_scale``.
            verbose: progress bar over queries.
            **settings: other engine-specific settings (see each engine class).

        Raises:
            ValueError: unknown engine.
            TypeError: a setting the engine does not take.
            MissingDependencyError: the engine's optional dependency is missing (the message says what to
                install).
        """
        from .engines import MissingDependencyError
        from .transformers import D2SRetriever

        pisa_settings = {
            k: v for k, v in (("algorithm", algorithm), ("toks_scale", toks_scale)) if v is not None
        }
        if engine is None:
            if pisa_settings:
                engine = "pisa"
            else:
                engine = DEFAULT_ENGINE
                try:
                    from .engines import engine_class

                    engine_class(engine).check_available()
                except MissingDependencyError as e:
                    logger.warning("%s; using the scipy 'exact' engine instead", e)
                    engine = "exact"
        return D2SRetriever(
            self,
            num_results=num_results,
            engine=engine,
            threads=threads,
            verbose=verbose,
            **pisa_settings,
            **settings,
        )

    def adaptive_retriever(self, num_results: int = 10, **kwargs: Any) -> pt.Transformer:
        """ "No expansion >> expansion" at a certified (exact) or calibrated candidate depth.

        Retrieves with a seed of each expanded query (its own terms via ``seed_column``, or its heaviest
        ``seed_terms`` terms), re-scores the candidates exactly with the whole query, and deepens until a bound
        proves that no other document can enter the top-k (falling back to exact retrieval past ``max_depth``);
        or, with ``depth=`` / :meth:`~pyterrier_d2s.index.adaptive.D2SAdaptiveRetriever.calibrate`, uses a
        fixed depth chosen for a target recall on a sample of queries. See
        :class:`~pyterrier_d2s.index.adaptive.D2SAdaptiveRetriever` for the arguments and the bound.
        """
        from .adaptive import D2SAdaptiveRetriever

        return D2SAdaptiveRetriever(self, num_results, **kwargs)

    def scorer(self, verbose: bool = False) -> pt.Transformer:
        """A re-ranker replacing ``score`` by the exact float dot product of ``query_toks`` with each stored vector."""
        from .transformers import D2SScorer

        return D2SScorer(self, verbose=verbose)

    def score(self, query_toks: Mapping[str, float], docnos: Sequence[str]) -> np.ndarray:
        """Exact float dot products of one query with the stored vectors of ``docnos``.

        Raises:
            KeyError: naming the docnos that are not in the index.
        """
        fwd = self.forward()
        rows = fwd.rows(list(docnos))
        q = fwd.query_matrix([dict(query_toks)])
        return np.asarray((fwd.matrix[rows] @ q.T).todense(), dtype=np.float64).ravel()

    def query_mass_loss(
        self, queries: Iterable[Mapping[str, float]], toks_scale: float | None = None
    ) -> float:
        """Fraction of the query weight mass (on indexed terms) that truncation at ``toks_scale`` loses."""
        known = self.forward().term_index
        t = self.query_scale if toks_scale is None else float(toks_scale)
        return quantisation.mass_loss([w for q in queries for k, w in q.items() if k in known], t)

    def choose_query_scale(
        self, queries: Iterable[Mapping[str, float]], max_mass_loss: float | None = None
    ) -> float:
        """Smallest query scale losing < ``max_mass_loss`` (default: the index's) of a sample of queries' mass."""
        known = self.forward().term_index
        target = self.meta["max_mass_loss"] if max_mass_loss is None else max_mass_loss
        return quantisation.choose_scale([w for q in queries for k, w in q.items() if k in known], target)

    def error_bound(self, query_toks: Mapping[str, float], toks_scale: float | None = None) -> float:
        """Bound ``B(q)`` on ``|PISA score - exact score|`` for this query and any document of the index."""
        t = self.query_scale if toks_scale is None else float(toks_scale)
        return quantisation.query_error_bound(query_toks, self.forward().term_max, self.doc_scale, t)


class D2SIndexer(pt.Indexer):
    """Builds a :class:`D2SIndex` atomically: everything goes into a temporary sibling directory that is renamed
    into place only when complete, so an interrupted build never leaves a directory that opens as an index."""

    def __init__(
        self,
        index: D2SIndex,
        *,
        scale: float | None = None,
        max_mass_loss: float = 0.005,
        query_scale: float | None = None,
        overwrite: bool = False,
    ):
        self._index = index
        self.scale = scale
        self.max_mass_loss = max_mass_loss
        self.query_scale = query_scale
        self.overwrite = overwrite

    def __repr__(self) -> str:
        return f"{self._index!r}.indexer(scale={self.scale!r}, max_mass_loss={self.max_mass_loss!r}, overwrite={self.overwrite!r})"

    def index_inputs(self) -> list[list[str]]:
        """Columns needed by :meth:`index`."""
        return [["docno", "toks"]]

    def index(self, iter_dict: Iterable[Mapping[str, Any]] | pd.DataFrame) -> D2SIndex:
        """Index ``{'docno': str, 'toks': {term: weight}}`` records (a DataFrame is accepted too).

        Raises:
            ValueError: on duplicate docnos (naming the first), negative/non-finite weights or unindexable terms.
        """
        self._check_target()
        if isinstance(iter_dict, pd.DataFrame):
            iter_dict = iter_dict.to_dict(orient="records")
        term_ids: dict[str, int] = {}
        docnos: list[str] = []
        indptr = [0]
        cols: list[int] = []
        vals: list[float] = []
        it = iter_dict
        if self._index.verbose:
            it = tqdm(it, desc="D2S indexing (reading)", unit="doc")
        for doc in it:
            docnos.append(str(doc["docno"]))
            for term, w in doc["toks"].items():
                col = term_ids.get(term)
                if col is None:
                    col = term_ids[term] = len(term_ids)
                cols.append(col)
                vals.append(w)
            indptr.append(len(cols))
        terms = np.array(list(term_ids), dtype=str) if term_ids else np.array([], dtype=str)
        matrix = sp.csr_matrix(
            (
                np.asarray(vals, dtype=np.float32),
                np.asarray(cols, dtype=np.int64),
                np.asarray(indptr, dtype=np.int64),
            ),
            shape=(len(docnos), len(terms)),
        )
        return self.index_matrix(docnos, matrix, terms)

    def index_matrix(
        self,
        docnos: Sequence[str] | np.ndarray,
        matrix: sp.spmatrix | sp.sparray,
        terms: Sequence[str] | np.ndarray,
        built_with: dict | None = None,
    ) -> D2SIndex:
        """Index a documents x terms matrix (see :meth:`D2SIndex.index_matrix`)."""
        started = time.perf_counter()
        self._check_target()
        docnos = np.asarray([str(d) for d in docnos], dtype=str)
        terms = np.asarray([str(t) for t in terms], dtype=str)
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.sum_duplicates()
        if matrix.shape != (len(docnos), len(terms)):
            raise ValueError(
                f"matrix shape {matrix.shape} does not match {len(docnos)} docnos x {len(terms)} terms"
            )
        if len(docnos) == 0:
            raise ValueError("cannot build an index with no documents")
        self._validate(docnos, matrix, terms)
        matrix.eliminate_zeros()

        doc_scale = (
            float(self.scale)
            if self.scale is not None
            else quantisation.choose_scale(matrix.data, self.max_mass_loss)
        )
        query_scale = float(self.query_scale) if self.query_scale is not None else doc_scale
        lost = quantisation.mass_loss(matrix.data, doc_scale)
        (logger.warning if lost >= self.max_mass_loss else logger.info)(
            "D2S index: document scale %g loses %.4f%% of the weight mass (limit %.4f%%)",
            doc_scale,
            100 * lost,
            100 * self.max_mass_loss,
        )

        target = self._index.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        (tmp / _BUILDER_FILE).write_text(str(os.getpid()))  # lets a later build tell a killed one's leftovers
        try:
            steps = tqdm(total=4, desc="D2S indexing", unit="step", disable=not self._index.verbose)
            ForwardStore.save(tmp, matrix, terms, docnos)
            steps.update()
            pisa_stats = write_pisa_collection(tmp / PISA_DIR, matrix, terms, docnos, doc_scale)
            steps.update()
            self._warm_pisa(tmp / PISA_DIR)
            steps.update()
            nnz = np.diff(matrix.indptr)
            meta = {
                "type": D2SIndex.ARTIFACT_TYPE,
                "format": D2SIndex.ARTIFACT_FORMAT,
                "package_hint": D2SIndex.ARTIFACT_PACKAGE_HINT,
                "num_docs": int(matrix.shape[0]),
                "num_terms": int(matrix.shape[1]),
                "nnz": int(matrix.nnz),
                "mean_doc_nnz": float(nnz.mean()),
                "empty_docs": int((nnz == 0).sum()),
                "max_weight": float(matrix.data.max()) if matrix.nnz else 0.0,
                "doc_scale": doc_scale,
                "query_scale": query_scale,
                "max_mass_loss": float(self.max_mass_loss),
                "doc_mass_lost": lost,
                "build_seconds": round(time.perf_counter() - started, 3),
                **pisa_stats,
                **({"built_with": built_with} if built_with else {}),
            }
            (tmp / _BUILDER_FILE).unlink()
            write_manifest(tmp)  # after PISA's warm-up query, which writes files of its own
            # pt_meta.json is written last: a directory without it never counts as built.
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
            self._swap_into_place(tmp, target)
            _remove_leftovers_of_killed_builds(target)
            steps.update()
            steps.close()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info(
            "D2S index built at %s: %d docs, %d terms, %.1f s",
            target,
            meta["num_docs"],
            meta["num_terms"],
            meta["build_seconds"],
        )
        self._index._meta = None
        self._index._forward = None
        self._index._pisa = None
        self._index.__dict__.pop("_engines", None)
        self._index.__dict__.pop("_taat_forward", None)
        return self._index

    # ---- helpers ----------------------------------------------------------------------------------------
    def _check_target(self) -> None:
        target = self._index.path
        if not target.exists():
            return
        if not target.is_dir():
            raise FileExistsError(f"{str(target)!r} exists and is not a directory")
        if not any(target.iterdir()):
            return
        if not self.overwrite:
            raise FileExistsError(
                f"{str(target)!r} already exists; pass overwrite=True to replace a D2S index"
            )
        try:
            meta = json.loads((target / META_FILE).read_text())
        except (OSError, ValueError):
            meta = {}
        # Never recursively delete something that is not one of ours.
        if meta.get("format") != D2SIndex.ARTIFACT_FORMAT:
            raise FileExistsError(f"{str(target)!r} exists and is not a D2S index; refusing to overwrite it")

    @staticmethod
    def _validate(docnos: np.ndarray, matrix: sp.csr_matrix, terms: np.ndarray) -> None:
        uniq, first, counts = np.unique(docnos, return_index=True, return_counts=True)
        if (counts > 1).any():
            dups = uniq[counts > 1]
            # name the duplicate that appears first in the input
            d = dups[np.argmin(first[counts > 1])]
            raise ValueError(f"duplicate docno {str(d)!r}")
        for d in docnos.tolist():
            _check_docno(d)
        if len(np.unique(terms)) != len(terms):
            raise ValueError("duplicate terms in the column vocabulary")
        used = np.unique(matrix.indices[matrix.data != 0])
        for t in terms[used].tolist():
            _check_term(t)
        if matrix.nnz and not np.isfinite(matrix.data).all():
            raise ValueError("weights must be finite")
        if matrix.nnz and (matrix.data < 0).any():
            raise ValueError("weights must be non-negative (PISA stores unsigned impacts)")

    @staticmethod
    def _warm_pisa(pisa_path: Path) -> None:
        # PISA compresses the collection and writes its block-max metadata on first query; do it now, inside
        # the temporary directory, so the finished index is complete (and usable read-only).
        from pyterrier_pisa import PisaIndex, PisaRetrieve

        with _native_output_held():
            PisaRetrieve(
                PisaIndex(str(pisa_path), stemmer="none"), scorer="quantized", num_results=1, stops="none"
            )

    @staticmethod
    def _swap_into_place(tmp: Path, target: Path) -> None:
        if target.exists():
            # an empty directory, or a D2S index we were told to overwrite (checked in _check_target)
            trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(trash)
            tmp.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(target)
