"""A head's index of a data set's images: building it (:func:`index_images`), verifying it
(:func:`check_index`), searching it (:func:`search`), and the checks that a head, an index and a data set
belong together (:func:`open_built_index`, :func:`check_built_with`, :func:`check_index_images`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from .data import PairedVectors
    from .index import D2SIndex
    from .model import D2S

__all__ = [
    "SearchHits",
    "check_built_with",
    "check_index",
    "check_index_images",
    "index_images",
    "merge_index_parts",
    "open_built_index",
    "search",
]

logger = logging.getLogger(__name__)


def index_images(
    model: str | os.PathLike,
    data: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    all_splits: bool = False,
) -> dict:
    """Encode the images of ``data`` with the head in ``model`` into a new D2SIndex at ``out``.

    Indexes the head's test images (those of its split.json, which the data's own labels must agree with;
    every image for a head without a test split), or every image with ``all_splits``. Returns the summary
    ``d2s index`` prints: ``index``, ``documents``, ``images`` (``"test"`` or ``"all"``), ``terms`` (columns
    with a weight), ``mean_doc_nnz`` and ``seconds``. No engine is built here: each builds its files on first
    use (PISA's quantisation statistics are then in ``index.engine("pisa").collection().info``).

    ``data`` may be several vectors directories (the parts of a sharded ``d2s encode``): each is indexed on
    its own and the parts merged (:func:`merge_index_parts`), the index one build over all of them gives.
    """
    if not isinstance(data, (str, os.PathLike)):
        return _index_parts(model, list(data), out, overwrite=overwrite, all_splits=all_splits)
    from .data import load_pairs, split_for_head
    from .index import D2SIndex
    from .model import D2S

    started = time.perf_counter()
    head = D2S.from_pretrained(model)
    pairs = load_pairs(data)
    if all_splits:
        images, which = pairs, "all"
    else:
        split = split_for_head(pairs, model)
        images, which = split.evaluation_split(), "test" if "test" in split.splits else "all"
    index = D2SIndex(out)
    head.image_indexer(index, overwrite=overwrite).index(images.corpus_iter())
    meta = index.meta
    return {
        "index": str(out),
        "documents": len(index),
        "images": which,
        "terms": meta.get("num_terms"),
        "mean_doc_nnz": meta.get("mean_doc_nnz"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _index_parts(
    model: str | os.PathLike, parts: list, out: str | os.PathLike, *, overwrite: bool, all_splits: bool
) -> dict:
    """:func:`index_images` of each data part into a scratch directory beside ``out``, merged into ``out``."""
    if not parts:
        raise ValueError("no data to index")
    if len(parts) == 1:
        return index_images(model, parts[0], out, overwrite=overwrite, all_splits=all_splits)
    started = time.perf_counter()
    scratch = Path(out).parent / f".{Path(out).name}.parts-{uuid.uuid4().hex[:8]}"
    try:
        built = [scratch / f"part-{k:05d}" for k in range(len(parts))]
        images = {
            index_images(model, d, b, all_splits=all_splits)["images"]
            for d, b in zip(parts, built, strict=True)
        }
        summary = merge_index_parts(built, out, overwrite=overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        **summary,
        "images": "all" if images == {"all"} else "test",
        "seconds": round(time.perf_counter() - started, 1),
    }


def merge_index_parts(
    parts: Sequence[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False
) -> dict:
    """Merge the built indexes ``parts`` (per-shard ``d2s index`` outputs, one head) into one D2SIndex at
    ``out``, docnos checked unique across them; the summary ``d2s index --merge`` prints."""
    from .index import D2SIndex
    from .index.building import merge_indexes

    started = time.perf_counter()
    index = merge_indexes([D2SIndex(p) for p in parts], D2SIndex(out), overwrite=overwrite)
    meta = index.meta
    return {
        "index": str(out),
        "documents": len(index),
        "parts": len(parts),
        "terms": meta.get("num_terms"),
        "mean_doc_nnz": meta.get("mean_doc_nnz"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def open_built_index(index_dir: str | os.PathLike) -> D2SIndex:
    """The D2SIndex at ``index_dir``; a FileNotFoundError when nothing has been built there."""
    from .index import D2SIndex

    index = D2SIndex(index_dir)
    if not index.built():
        raise FileNotFoundError(f"{index_dir} is not a built D2S index (run d2s index first)")
    return index


def check_index_images(index: D2SIndex, data: PairedVectors, where: str | os.PathLike) -> None:
    """That ``index`` holds exactly ``data``'s images (the head's test images); else name the first odd one."""
    docnos = {str(d) for d in index.forward().docnos}
    images = set(data.image_ids)
    if docnos != images:
        odd = sorted(docnos ^ images)[0]
        side = f"only in {where}" if odd in docnos else f"not in {where}"
        raise ValueError(
            f"{where} holds {len(docnos)} images, not the {len(images)} of {data.name}: image {odd!r} is {side} "
            "(index the head's test images with d2s index, without --all-splits)"
        )


def check_built_with(
    index: D2SIndex, model: D2S, index_dir: str | os.PathLike, model_dir: str | os.PathLike
) -> None:
    """Refuse to search an index with a head other than the one that encoded its images (silently wrong
    scores otherwise). Indexes that recorded no head (built by an older version, or from a matrix) pass."""
    recorded = (index.meta.get("built_with") or {}).get("head_fingerprint")
    if recorded is not None and recorded != model.head.fingerprint():
        raise ValueError(
            f"{index_dir} was built with another head than {model_dir}; index the images with this head "
            "(d2s index --model ... --overwrite) or pass the head that built it"
        )


def check_index(index_dir: str | os.PathLike, on_problem: Callable[[str], None] | None = None) -> dict:
    """Verify every file of the index at ``index_dir`` against its build's manifest (SHA-256), then its
    structure; ``{"index", "ok": True, "documents"}`` when it is sound.

    Each damaged file is passed to ``on_problem`` (default: logged as an error) before a ValueError says how
    many there are.
    """
    from .index import D2SIndex
    from .index.integrity import verify

    index = D2SIndex(index_dir)
    if not index.built():
        raise FileNotFoundError(f"{index_dir} is not a built D2S index")
    problems = verify(Path(index_dir))
    for problem in problems:
        (on_problem or logger.error)(problem)
    if problems:
        raise ValueError(f"{index_dir}: {len(problems)} file(s) damaged; rebuild the index")
    index.forward()  # the structural checks too
    return {"index": str(index_dir), "ok": True, "documents": len(index)}


@dataclass
class SearchHits:
    """What :func:`search` found: the query's text and the result frame (``docno``, ``score``, ``rank``...)."""

    query: str
    results: pd.DataFrame

    def records(self) -> list[dict]:
        """One ``{"docno", "score", "rank"}`` per hit, best first (what ``d2s search`` prints as JSON)."""
        return [
            {"docno": r.docno, "score": float(r.score), "rank": int(r.rank)}
            for r in self.results.itertuples()
        ]


def search(
    model: str | os.PathLike,
    index: str | os.PathLike,
    query: str | None = None,
    *,
    data: str | os.PathLike | None = None,
    qid: str | None = None,
    num_results: int = 10,
    expansion: bool = True,
    encoder: str | None = None,
) -> SearchHits:
    """Search the index at ``index`` with the head in ``model``: caption ``qid`` of ``data`` (its dense
    vector), or a text ``query`` encoded by ``encoder`` (default: the dense model the head records).

    ``expansion=False`` searches with the caption's own terms only.
    """
    from .model import D2S

    if encoder is None and qid is None:
        encoder = "auto"  # a text query needs the dense model the head was trained on
    head = D2S.from_pretrained(model, dense_encoder=encoder)
    topics = _search_topics(query, data, qid)
    d2s_index = open_built_index(index)
    check_built_with(d2s_index, head, index, model)
    pipeline = (head.query_encoder(expansion=expansion) >> d2s_index.retriever(num_results=num_results)).compile()
    return SearchHits(str(topics["query"].iloc[0]), pipeline(topics))


def _search_topics(query: str | None, data: str | os.PathLike | None, qid: str | None) -> pd.DataFrame:
    """The one-topic frame :func:`search` runs: caption ``qid`` of ``data``, or the text ``query``."""
    import pandas as pd

    from .data import load_pairs

    if qid is not None:
        if data is None:
            raise ValueError("--qid needs --data")
        topics = load_pairs(data).topics()
        topics = topics[topics["qid"] == qid]
        if len(topics) == 0:
            raise KeyError(f"no caption with id {qid!r} in {data}")
        return topics
    if query:
        return pd.DataFrame({"qid": ["q"], "query": [query]})
    raise ValueError("give a text query or --data and --qid")
