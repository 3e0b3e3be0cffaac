"""The D2S index: a forward store of the exact float vectors, PISA over quantised impacts, and other engines.

The index only sees ``{term: weight}`` dicts and CSR matrices; it knows nothing of the D2S head. Retrieval
engines (exact ``taat`` by default, ``exact``, ``pisa``, ``seismic``) live in :mod:`.engines`, one module each.

Example::

    index = D2SIndex("coco.d2s")
    index.index_matrix(docnos, csr, terms)              # or index.indexer().index(iter_of_dicts)
    pipe = index.retriever(num_results=100) >> index.scorer()
    pipe(pd.DataFrame({"qid": ["1"], "query_toks": [{"dog": 1.2, "park": 0.4}]}))
    index.retriever(num_results=10, engine="seismic")   # approximate, pip install 'pyterrier-d2s[seismic]'
    index.adaptive_retriever(num_results=10)             # seed retrieval + exact re-scoring, certified depth
"""

from . import quantisation
from ._store import ForwardStore
from .adaptive import D2SAdaptiveRetriever
from .core import DEFAULT_ENGINE, D2SIndex, D2SIndexer
from .engines import MissingDependencyError
from .engines.pisa import DEFAULT_ALGORITHM
from .transformers import D2SExactRetriever, D2SPisaRetriever, D2SRetriever, D2SScorer

__all__ = [
    "DEFAULT_ALGORITHM",
    "DEFAULT_ENGINE",
    "D2SAdaptiveRetriever",
    "D2SExactRetriever",
    "D2SIndex",
    "D2SIndexer",
    "D2SPisaRetriever",
    "D2SRetriever",
    "D2SScorer",
    "ForwardStore",
    "MissingDependencyError",
    "quantisation",
]
