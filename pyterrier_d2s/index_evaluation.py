"""Evaluation over a built index, through PyTerrier pipelines: the four systems of ``d2s evaluate`` (dense,
expanded, no expansion, no expansion >> expansion rescoring) compared on a head's test captions
(:func:`evaluate_index`), and the per-query top-k overlap of a sparse and the dense run (:func:`dense_overlaps`).

:mod:`pyterrier_d2s.evaluation` is its in-memory counterpart (a head on paired vectors, no index).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from .data import PairedVectors
    from .experiment import System
    from .index import D2SIndex
    from .model import D2S

__all__ = [
    "SYSTEM_NAMES",
    "comparison_records",
    "dense_overlaps",
    "evaluate_index",
    "evaluation_systems",
    "format_comparison",
]

logger = logging.getLogger(__name__)

SYSTEM_NAMES = ("dense", "d2s-expanded", "d2s-noexp", "d2s-noexp>>rescore")


def evaluation_systems(
    model: D2S,
    index: D2SIndex,
    dense_index,
    candidates: int,
    num_results: int,
    noexp_model: D2S | None = None,
    noexp_index: D2SIndex | None = None,
) -> list[System]:
    """The four systems of ``d2s evaluate``, named as in :data:`SYSTEM_NAMES`.

    The no-expansion run and the rescorer's first stage use the caption's own terms; by default they are
    ``model``'s own-term weights over ``index``. With ``noexp_model``/``noexp_index`` (a head trained with
    ``exp="0"`` and its index) they come from that model, which is how the paper's Table 6 pairs an exp=0
    first stage with re-scoring by the expanded model; the rescorer always scores with ``model``/``index``.
    ``dense_index`` is a pyterrier-dr FlexIndex of the same images (:func:`experiment.dense_flex_index`).
    """
    from .experiment import System

    if (noexp_model is None) != (noexp_index is None):
        raise ValueError("give both --noexp-model and --noexp-index, or neither")
    first_model, first_index = (noexp_model, noexp_index) if noexp_model is not None else (model, index)
    expanded = model.query_encoder(expansion=True)
    noexp = first_model.query_encoder(expansion=False)
    return [
        System("dense", dense_index.np_retriever(num_results=num_results)),
        System("d2s-expanded", expanded >> index.retriever(num_results=num_results), expanded),
        System("d2s-noexp", noexp >> first_index.retriever(num_results=num_results), noexp, first_index),
        System(
            "d2s-noexp>>rescore",
            noexp >> first_index.retriever(num_results=candidates) >> model.rescorer(index),
            noexp,
            first_index,
        ),
    ]


def evaluate_index(
    model: str | os.PathLike,
    index: str | os.PathLike,
    data: str | os.PathLike,
    *,
    candidates: int = 100,
    num_results: int = 100,
    noexp_model: str | os.PathLike | None = None,
    noexp_index: str | os.PathLike | None = None,
    notify: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Compare the :func:`evaluation_systems` on the test captions of the head in ``model`` (its split.json).

    ``index`` must hold exactly the head's test images, built with that head (``d2s index``); ``noexp_model``
    / ``noexp_index`` give the no-expansion first stage (both or neither). ``candidates``: documents the
    rescorer re-scores; ``num_results``: results per query of the other systems. Returns
    :func:`experiment.compare`'s table (one row per system, dense as the reference). ``notify`` receives
    the notes on how to read it (default: logged as warnings).
    """
    from .data import load_pairs, split_for_head
    from .experiment import compare, dense_flex_index
    from .model import D2S

    notify = notify or logger.warning
    head = D2S.from_pretrained(model)
    split = split_for_head(load_pairs(data), model)
    test = split.evaluation_split()
    d2s_index = _open_index_of(head, index, model, test)
    first_model, first_index = _first_stage(head, d2s_index, split, noexp_model, noexp_index, notify)
    if "test" not in split.splits:
        notify(
            f"{test.name} has no test split for this head: the numbers are on every image, "
            "including those it was trained on"
        )
    with tempfile.TemporaryDirectory(prefix="d2s-dense-") as tmp:
        dense = dense_flex_index(f"{tmp}/dense.flex", test.corpus_iter())
        systems = evaluation_systems(
            head, d2s_index, dense, candidates, num_results, first_model, first_index
        )
        return compare(systems, test.topics(), test.qrels(), index=d2s_index, reference="dense")


def _open_index_of(
    head: D2S, index_dir: str | os.PathLike, model_dir: str | os.PathLike, test: PairedVectors
) -> D2SIndex:
    """The built index at ``index_dir``, refused unless it holds ``test``'s images encoded by ``head``."""
    from .indexing import check_built_with, check_index_images, open_built_index

    index = open_built_index(index_dir)
    check_index_images(index, test, index_dir)
    check_built_with(index, head, index_dir, model_dir)
    return index


def _first_stage(
    head: D2S,
    index: D2SIndex,
    split: PairedVectors,
    noexp_model: str | os.PathLike | None,
    noexp_index: str | os.PathLike | None,
    notify: Callable[[str], None],
) -> tuple[D2S | None, D2SIndex | None]:
    """The exp=0 head and its index that give the no-expansion run, loaded and checked (both ``None``: the
    main head's own-term weights, with a note when that head expands)."""
    from .data import split_for_head
    from .index import D2SIndex
    from .indexing import check_built_with
    from .model import D2S

    if (noexp_model is None) != (noexp_index is None):
        raise ValueError("give both --noexp-model and --noexp-index, or neither")
    if noexp_model is None:
        if head.head.config.exp != "0":
            notify(
                f"d2s-noexp and the rescorer's candidates use this exp={head.head.config.exp} head's weights "
                "on the captions' own tokens; the paper's Table 6 takes them from an exp=0 head "
                "(--noexp-model/--noexp-index, as d2s demo does)"
            )
        return None, None
    first_model = D2S.from_pretrained(noexp_model)
    first_index = D2SIndex(noexp_index)
    if not first_index.built() or len(first_index) != len(index):
        raise ValueError(f"{noexp_index} is not a built index of the same {len(index)} images")
    check_built_with(first_index, first_model, noexp_index, noexp_model)
    # the first-stage head must not have trained on the test images either
    split_for_head(split, noexp_model)
    return first_model, first_index


def comparison_records(table: pd.DataFrame) -> list[dict]:
    """One JSON-ready dict per system of an :func:`evaluate_index` table (what ``d2s evaluate`` prints):
    ``name``, ``R@1``, ``R@5``, ``RR@10``, ``flops`` (``None`` for dense), ``ms_per_query``, ``overlap@10``
    and the ``rho-<measure>`` columns."""
    import pandas as pd

    return [
        {
            "name": r["name"],
            "R@1": r["R@1"],
            "R@5": r["R@5"],
            "RR@10": r["RR@10"],
            "flops": None if pd.isna(r.get("flops")) else r["flops"],
            "ms_per_query": r["ms_per_query"],
            "overlap@10": r.get("overlap@10"),
            **{k: r[k] for k in table.columns if k.startswith("rho-")},
        }
        for r in table.to_dict(orient="records")
    ]


def format_comparison(table: pd.DataFrame) -> str:
    """The comparison table as ``d2s evaluate`` prints it: four decimals, without the ``rho-`` columns."""
    import pandas as pd

    with pd.option_context(
        "display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format
    ):
        return table.drop(columns=[c for c in table.columns if c.startswith("rho-")]).to_string(index=False)


def dense_overlaps(
    model: str | os.PathLike, index: str | os.PathLike, data: str | os.PathLike, k: int = 10
) -> pd.Series:
    """Per test caption of the head in ``model`` (its split.json), the fraction of the exact dense top-``k``
    that the head's expanded search of ``index`` also returns in its top ``k`` (Fig. 2b); indexed by qid."""
    from .data import load_pairs, split_for_head
    from .evaluation import dense_top_k, run_frame
    from .index import D2SIndex
    from .measures import overlap_at_k
    from .model import D2S

    head = D2S.from_pretrained(model)
    test = split_for_head(load_pairs(data), model).evaluation_split()
    topics = test.topics()
    sparse = (head.query_encoder() >> D2SIndex(index).retriever(num_results=k))(topics)
    idx, val = dense_top_k(test.caption_vectors, test.image_vectors, k=k)
    dense = run_frame(test.caption_ids, test.image_ids, idx, val)
    return overlap_at_k(sparse, dense, k).reindex(topics["qid"], fill_value=0.0)
