"""Building a :class:`~pyterrier_d2s.index.D2SIndex`: validation, an atomic write, and engines prepared on demand.

Everything goes into a temporary sibling directory (``.NAME.tmp-XXXX``, holding the builder's pid) that is
renamed into place only when complete, so an interrupted build never leaves a directory that opens as an
index; a later build removes what killed builds left. The build writes the forward store, ``manifest.json``
and ``pt_meta.json`` (last); engines build their own files on first use, or at build time when named in
``engines=``. Attaches ``D2SIndex.indexer``, ``index``, ``index_inputs`` and ``index_matrix``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import scipy.sparse as sp
from tqdm.auto import tqdm

from .core import META_FILE, D2SIndex
from .engines import get_engine
from .forward import ForwardStore
from .integrity import write_manifest

__all__ = ["D2SIndexer", "EngineSpec", "merge_indexes"]

logger = logging.getLogger(__name__)

#: engines to prepare at build time: names, or names mapped to their build settings
EngineSpec = Iterable[str] | Mapping[str, Mapping[str, Any]]

_BUILDER_FILE = ".builder-pid"


def _check_term(term: str) -> None:
    # Every term must stay indexable by the PISA engine, which reads lexicons line by line and lower-cases
    # query terms: such terms could never be matched there.
    if not term or term != term.strip() or any(c.isspace() for c in term):
        raise ValueError(f"term {term!r} is empty or contains whitespace; PISA cannot index it")
    if term != term.lower():
        raise ValueError(
            f"term {term!r} is not lower-case; PISA lower-cases query terms, so it could never match"
        )


def _check_docno(docno: str) -> None:
    if not docno or "\n" in docno or "\r" in docno or "\x00" in docno:
        # docnos.txt holds one per line, and PISA's C strings end at a NUL byte
        raise ValueError(f"docno {docno!r} is empty or contains a line break or a NUL byte")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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


def _engine_settings(engines: EngineSpec) -> dict[str, dict[str, Any]]:
    if isinstance(engines, Mapping):
        return {str(name): dict(settings) for name, settings in engines.items()}
    return {str(name): {} for name in engines}


def records_to_csr(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], sp.csr_matrix, np.ndarray]:
    """(docnos, CSR float32 documents x terms, terms in first-seen order) of ``{'docno', 'toks'}`` records."""
    term_ids: dict[str, int] = {}
    docnos: list[str] = []
    indptr = [0]
    cols: list[int] = []
    vals: list[float] = []
    for doc in records:
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
    return docnos, matrix, terms


def _statistics(matrix: sp.csr_matrix) -> dict[str, Any]:
    nnz = np.diff(matrix.indptr)
    return {
        "num_docs": int(matrix.shape[0]),
        "num_terms": int(matrix.shape[1]),
        "nnz": int(matrix.nnz),
        "mean_doc_nnz": float(nnz.mean()),
        "empty_docs": int((nnz == 0).sum()),
        "max_weight": float(matrix.data.max()) if matrix.nnz else 0.0,
    }


class D2SIndexer(pt.Indexer):
    """Builds a :class:`D2SIndex` atomically (see the module docstring).

    Args:
        index: the index to build.
        overwrite: replace an existing D2S index at its path.
        engines: engines to build now rather than on first use, e.g. ``("pisa",)`` or
            ``{"pisa": {"scale": 100}}`` (names mapped to build settings; see each engine's ``prepare``).
    """

    def __init__(self, index: D2SIndex, *, overwrite: bool = False, engines: EngineSpec = ()):
        self._index = index
        self.overwrite = overwrite
        self.engines = _engine_settings(engines)

    def __repr__(self) -> str:
        return f"{self._index!r}.indexer(overwrite={self.overwrite!r}, engines={list(self.engines)!r})"

    def index_inputs(self) -> list[list[str]]:
        """Columns needed by :meth:`index`."""
        return [["docno", "toks"]]

    def transform_inputs(self) -> list[list[str]]:
        """The same as :meth:`index_inputs` (for ``pt.inspect``, which asks every transformer this)."""
        return self.index_inputs()

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """No frame: an indexer consumes its documents (the index is what :meth:`index` returns)."""
        pta.validate.columns(input_columns, includes=self.index_inputs()[0])
        return []

    def index(self, iter_dict: Iterable[Mapping[str, Any]] | pd.DataFrame) -> D2SIndex:
        """Index ``{'docno': str, 'toks': {term: weight}}`` records (a DataFrame is accepted too).

        Raises:
            ValueError: on duplicate docnos (naming the first), negative/non-finite weights or unindexable terms.
        """
        self._check_target()
        if isinstance(iter_dict, pd.DataFrame):
            iter_dict = iter_dict.to_dict(orient="records")
        if self._index.verbose:
            iter_dict = tqdm(iter_dict, desc="D2S indexing (reading)", unit="doc")
        docnos, matrix, terms = records_to_csr(iter_dict)
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
        docnos, matrix, terms = self._validated(docnos, matrix, terms)
        target = self._index.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        (tmp / _BUILDER_FILE).write_text(str(os.getpid()))  # lets a later build tell a killed one's leftovers
        try:
            meta = self._write(tmp, docnos, matrix, terms, started, built_with)
            self._swap_into_place(tmp, target)
            _remove_leftovers_of_killed_builds(target)
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
        self._index.invalidate()
        return self._index

    # ---- helpers ----------------------------------------------------------------------------------------
    def _write(
        self,
        tmp: Path,
        docnos: np.ndarray,
        matrix: sp.csr_matrix,
        terms: np.ndarray,
        started: float,
        built_with: dict | None,
    ) -> dict:
        """Write the whole index into ``tmp``, the engines named at construction included; its metadata."""
        steps = tqdm(
            total=2 + len(self.engines), desc="D2S indexing", unit="step", disable=not self._index.verbose
        )
        ForwardStore.save(tmp, matrix, terms, docnos)
        steps.update()
        meta = {
            "type": D2SIndex.ARTIFACT_TYPE,
            "format": D2SIndex.ARTIFACT_FORMAT,
            "package_hint": D2SIndex.ARTIFACT_PACKAGE_HINT,
            **_statistics(matrix),
            "build_seconds": round(time.perf_counter() - started, 3),
            **({"built_with": built_with} if built_with else {}),
        }
        (tmp / _BUILDER_FILE).unlink()
        write_manifest(tmp)
        # pt_meta.json is written last: a directory without it never counts as built.
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        steps.update()
        # engines are built inside the temporary directory too (under engines/, outside the manifest), so
        # that a failing engine build leaves no index behind
        staged = D2SIndex(tmp, verbose=self._index.verbose)
        for name, settings in self.engines.items():
            get_engine(staged, name).prepare(**settings)
            steps.update()
        steps.close()
        return meta

    def _validated(
        self,
        docnos: Sequence[str] | np.ndarray,
        matrix: sp.spmatrix | sp.sparray,
        terms: Sequence[str] | np.ndarray,
    ) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
        """The inputs as arrays and a CSR float32 matrix without duplicates or zeros (ValueError if unusable)."""
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
        return docnos, matrix, terms

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
    def _swap_into_place(tmp: Path, target: Path) -> None:
        if target.exists():
            # an empty directory, or a D2S index we were told to overwrite (checked in _check_target)
            trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(trash)
            tmp.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(target)


# ---- the methods of D2SIndex ---------------------------------------------------------------------------------


def _indexer(self: D2SIndex, *, overwrite: bool = False, engines: EngineSpec = ()) -> D2SIndexer:
    """An indexer taking dicts with ``docno`` and ``toks`` (``{term: weight}``).

    Args:
        overwrite: replace an existing D2S index at ``path``.
        engines: engines to build at build time rather than on first use: names (``("pisa",)``), or names
            mapped to their build settings (``{"pisa": {"scale": 100}}``).
    """
    return D2SIndexer(self, overwrite=overwrite, engines=engines)


def _index_inputs(self: D2SIndex) -> list[list[str]]:
    """Columns needed by :meth:`index`."""
    return [["docno", "toks"]]


def _index(self: D2SIndex, iter_dict: Iterable[Mapping[str, Any]]) -> D2SIndex:
    """Index ``{'docno', 'toks'}`` dicts with the default settings (see :meth:`indexer`)."""
    return self.indexer().index(iter_dict)


def _index_matrix(
    self: D2SIndex,
    docnos: Sequence[str] | np.ndarray,
    matrix: sp.spmatrix | sp.sparray,
    terms: Sequence[str] | np.ndarray,
    *,
    overwrite: bool = False,
    engines: EngineSpec = (),
    built_with: dict | None = None,
) -> D2SIndex:
    """Index a CSR matrix (documents x terms) directly: the fast path for batch encoders.

    Args:
        docnos: one identifier per row.
        matrix: non-negative weights; columns named by ``terms``.
        terms: column vocabulary (lower-case, no whitespace; unused columns are fine).
        overwrite, engines: as in :meth:`indexer`.
        built_with: JSON-able provenance stored in ``pt_meta.json`` (e.g. the encoding head's fingerprint).
    """
    return self.indexer(overwrite=overwrite, engines=engines).index_matrix(
        docnos, matrix, terms, built_with=built_with
    )


D2SIndex.indexer = _indexer
D2SIndex.index_inputs = _index_inputs
D2SIndex.index = _index
D2SIndex.index_matrix = _index_matrix


def _merged_built_with(parts: Sequence[D2SIndex]) -> dict | None:
    """The ``built_with`` the parts share (the head that encoded them); a ValueError when they differ."""
    recorded = {json.dumps(p.meta.get("built_with"), sort_keys=True): p for p in parts}
    if len(recorded) > 1:
        a, b = list(recorded.values())[:2]
        raise ValueError(f"index parts {str(a.path)!r} and {str(b.path)!r} were built with different heads")
    return parts[0].meta.get("built_with")


def _check_unique_docnos(parts: Sequence[D2SIndex]) -> None:
    """A ValueError naming the first docno that two parts share, and both parts."""
    seen: dict[str, int] = {}
    for k, part in enumerate(parts):
        for d in part.forward().docnos.tolist():
            if seen.setdefault(d, k) != k:
                raise ValueError(
                    f"duplicate docno {d!r} across shards: in {str(parts[seen[d]].path)!r} and {str(part.path)!r}"
                )


def merge_indexes(
    parts: Sequence[D2SIndex], target: D2SIndex, *, overwrite: bool = False, engines: EngineSpec = ()
) -> D2SIndex:
    """One index at ``target`` holding the documents of the built ``parts``, in part order: what one build
    over all their documents gives, so that documents can be encoded and indexed per shard.

    The parts' columns are united (a term's weights keep their values; parts of one head share all
    columns). Docnos must be unique across the parts, and the parts built with one head.

    Raises:
        ValueError: no parts, an unbuilt part, a docno in two parts (named, with both parts), or parts
            built with different heads.
        FileExistsError: ``target`` exists (without ``overwrite``).
    """
    if not parts:
        raise ValueError("no index parts to merge")
    for part in parts:
        if not part.built():
            raise ValueError(f"{str(part.path)!r} is not a built D2S index")
    _check_unique_docnos(parts)
    built_with = _merged_built_with(parts)
    stores = [p.forward() for p in parts]
    terms = np.asarray(list(dict.fromkeys(t for s in stores for t in s.terms.tolist())), dtype=str)
    column = {t: i for i, t in enumerate(terms.tolist())}
    blocks = []
    for store in stores:
        remap = np.asarray([column[t] for t in store.terms.tolist()], dtype=np.int64)
        m = store.matrix.tocoo()
        blocks.append(sp.csr_matrix((m.data, (m.row, remap[m.col])), shape=(m.shape[0], len(terms))))
    docnos = np.concatenate([s.docnos for s in stores])
    indexer = D2SIndexer(target, overwrite=overwrite, engines=engines)
    return indexer.index_matrix(docnos, sp.vstack(blocks, format="csr"), terms, built_with=built_with)
