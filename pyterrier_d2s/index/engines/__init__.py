"""Retrieval engines of a :class:`~pyterrier_d2s.index.D2SIndex`, one module each, behind one interface.

========== ======= ==================================================================== ==================
engine     exact   how                                                                  needs
========== ======= ==================================================================== ==================
``taat``   yes     compiled upper-bound pass (byte columns + short posting lists), then  numba (core)
                   exact re-scoring in bound order until no bound can beat the k-th
``exact``  yes     scipy sparse products over the forward store (the ground truth)      scipy (core)
``pisa``   ~       PISA dynamic pruning over quantised impacts (error bound known)       pyterrier-pisa
``seismic`` no     Seismic (static pruning + block summaries), re-scored exactly         ``[seismic]`` extra
========== ======= ==================================================================== ==================

``D2SIndex.retriever(engine=...)`` picks one; :func:`get_engine` (attached as ``D2SIndex.engine``) returns the
per-index engine object, kept in the index's cache. Engines register in :data:`ENGINES` by module path and are
imported on first use, so optional dependencies stay optional. Engines import the index core, never the
retrievers built on them.
"""

from __future__ import annotations

import importlib

from ..core import D2SIndex
from ._base import Engine, Hits, MissingDependencyError, QueryBatch, group_ranks, sort_hits

__all__ = [
    "ENGINES",
    "Engine",
    "Hits",
    "MissingDependencyError",
    "QueryBatch",
    "engine_class",
    "get_engine",
    "group_ranks",
    "sort_hits",
]

#: engine name -> "module:class" (modules are imported on demand, so optional dependencies stay optional)
ENGINES: dict[str, str] = {
    "taat": ".taat:TaatEngine",
    "exact": ".exact:ExactEngine",
    "pisa": ".pisa.engine:PisaEngine",
    "seismic": ".seismic:SeismicEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The class of engine ``name``.

    Raises:
        ValueError: for an unknown engine name.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(map(repr, ENGINES))}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module, __name__), cls)


def get_engine(index: D2SIndex, name: str) -> Engine:
    """Engine ``name`` of ``index``, created once per index object (it holds loaded data structures).

    Raises:
        ValueError: for an unknown engine name.
        MissingDependencyError: when its optional dependency is not installed (the message says what to install).
    """
    cls = engine_class(name)
    cls.check_available()
    return index.cached(("engine", name), lambda: cls(index))


def _engine(self: D2SIndex, name: str) -> Engine:
    """Engine ``name`` of this index (one object per index, holding what it loaded; see
    :mod:`pyterrier_d2s.index.engines`), e.g. ``index.engine("pisa").error_bound(query_toks)``.

    Raises:
        ValueError: for an unknown engine name.
        MissingDependencyError: when its optional dependency is not installed.
    """
    return get_engine(self, name)


D2SIndex.engine = _engine
