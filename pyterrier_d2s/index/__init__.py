"""The D2S index: a forward store of the exact float vectors, searched by engines (taat, exact, pisa, seismic).

The index only sees ``{term: weight}`` dicts and CSR matrices; it knows nothing of the D2S head. Modules, from
the bottom up: :mod:`.forward` (the forward store), :mod:`.core` (:class:`D2SIndex`, the artifact and its one
cache), :mod:`.engines` (one module or package per engine), :mod:`.results` (result frames and exact re-scoring),
:mod:`.retrievers` / :mod:`.adaptive` (PyTerrier transformers) and :mod:`.building` (:class:`D2SIndexer`).
The last three attach their methods to :class:`D2SIndex`; importing this package imports them all.

Example::

    index = D2SIndex("coco.d2s")
    index.index_matrix(docnos, csr, terms)              # or index.indexer().index(iter_of_dicts)
    pipe = index.retriever(num_results=100) >> index.scorer()
    pipe(pd.DataFrame({"qid": ["1"], "query_toks": [{"dog": 1.2, "park": 0.4}]}))
    index.retriever(num_results=10, engine="pisa", algorithm="maxscore")   # built on first use
    index.retriever(num_results=10, engine="seismic")   # approximate, pip install 'pyterrier-d2s[seismic]'
    index.adaptive_retriever(num_results=10)             # seed retrieval + exact re-scoring, certified depth
"""

from .adaptive import D2SAdaptiveRetriever
from .building import D2SIndexer
from .core import DEFAULT_ENGINE, D2SIndex
from .engines import MissingDependencyError, get_engine
from .forward import ForwardStore
from .retrievers import D2SRetriever, D2SScorer

__all__ = [
    "DEFAULT_ENGINE",
    "D2SAdaptiveRetriever",
    "D2SIndex",
    "D2SIndexer",
    "D2SRetriever",
    "D2SScorer",
    "ForwardStore",
    "MissingDependencyError",
    "get_engine",
]
