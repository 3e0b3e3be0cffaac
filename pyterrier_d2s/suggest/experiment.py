"""Train M1-M4 and compare them with BM25, dense retrieval and D2S on one image-suggestion task.

:func:`run_image_suggestion` trains each preset on the task's training images, indexes the test images'
documents in a :class:`~pyterrier_d2s.index.D2SIndex` (one per preset), and evaluates every system on the test
images with ``pt.Experiment`` (through :func:`pyterrier_d2s.experiment.compare`):

* ``M1``...``M4``: preset query encoder >> the index's retriever (exact TAAT);
* ``bm25``: PISA's BM25 over the documents' captions (pyterrier-pisa, no Java);
* ``dense``: the query caption's dense vector against the image vectors (pyterrier-dr, exact);
* ``d2s``: the D2S head (c+w expansion control) trained on the same training images' vector caption/image
  pairs: the query caption's vector -> expanded query, the image vector -> document (image only).

Under ``torchrun`` every rank trains (the presets' bi-encoders and the ``d2s`` head are data-parallel, see
:mod:`.trainer`); rank 0 alone saves the models, builds the indexes and evaluates, and the other ranks
return no records. The presets are all trained before any index is built, so the other ranks never wait in
a collective while rank 0 indexes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from ir_measures import RR, R, nDCG

from ..experiment import System, compare, dense_flex_index
from ..index import D2SIndex
from ..index.engines.pisa import bm25_text_retriever
from ..training.distributed import init_from_env
from ..vocab import Vocabulary
from .encoders import backbone_source
from .model import SuggestBiEncoder, SuggestConfig, text_tokens
from .pipeline import SuggestModel
from .presets import PRESETS, preset
from .task import EvaluationSet, SuggestTask
from .trainer import BiEncoderTrainConfig, BiEncoderTrainer

__all__ = ["MEASURES", "SYSTEMS", "SuggestSettings", "run_image_suggestion", "train_preset"]

logger = logging.getLogger(__name__)

MEASURES = (nDCG @ 10, RR @ 10, R @ 1, R @ 10)
BASELINES = ("bm25", "dense", "d2s")
SYSTEMS = (*PRESETS, *BASELINES)
TRAIN_SPLITS = ("train", "restval")


@dataclass
class SuggestSettings:
    """How the presets are built and trained (the paper's defaults: 5 epochs, a full vocabulary)."""

    backbone: str | None = None  # None: the offline all-MiniLM-L6-v2
    frozen: bool = True
    output_vocab: str = "train"  # "train": the tokens of the training texts; "all": the whole vocabulary
    pooling: str = "max"
    max_length: int = 128
    train: BiEncoderTrainConfig = field(default_factory=BiEncoderTrainConfig)
    d2s_epochs: int | None = None  # None: the D2S recipe's
    num_results: int = 100
    device: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.output_vocab not in ("train", "all"):
            raise ValueError(f"output_vocab must be 'train' or 'all', not {self.output_vocab!r}")


def train_preset(
    name: str, train: SuggestTask, settings: SuggestSettings, out: str | os.PathLike | None = None
) -> tuple[SuggestModel, float]:
    """(the trained preset ``name``, training seconds); with ``out``, checkpointed there and saved to
    ``out``/model (by rank 0 alone under ``torchrun``)."""
    p = preset(name)
    pairs = train.training_pairs()
    texts = pairs.queries + (pairs.captions or [])
    vocab = Vocabulary(backbone_source(settings.backbone))
    tokens = text_tokens(texts, vocab) if settings.output_vocab == "train" else None
    config = SuggestConfig.for_preset(
        p,
        backbone=settings.backbone,
        image_dim=int(train.image_vectors.shape[1]),
        pooling=settings.pooling,
        max_length=settings.max_length,
        frozen=settings.frozen,
        output_tokens=tokens,
    )
    started = time.perf_counter()
    torch.manual_seed(
        settings.train.seed
    )  # the heads' initialisation: a run is repeatable, not order-dependent
    model = SuggestBiEncoder(config)
    trainer = BiEncoderTrainer(
        settings.train, checkpoint_dir=out, device=settings.device, progress=settings.progress
    )
    trainer.fit(model, pairs)
    seconds = time.perf_counter() - started
    if out is not None and trainer.dist.is_main:
        model.save_pretrained(Path(out) / "model")
    return SuggestModel(model.cpu()), seconds


def _sparse_system(name: str, model: SuggestModel, documents: pd.DataFrame, path: Path, k: int) -> System:
    docs = model.doc_encoder()(documents)
    index = D2SIndex(path, verbose=False)
    index.indexer(overwrite=True).index(docs[["docno", "toks"]].to_dict("records"))
    query = model.query_encoder()
    return System(name, query >> index.retriever(num_results=k), query, index)


def _d2s_system(
    task: SuggestTask, documents: pd.DataFrame, settings: SuggestSettings, path: Path
) -> tuple[System | None, float]:
    from ..model import D2S
    from ..training import D2STrainer, TrainConfig

    if task.pairs_data is None:
        raise ValueError("the d2s baseline needs the task's paired vectors (build the task with build_task)")
    started = time.perf_counter()
    config = TrainConfig(exp="c+w", epochs=settings.d2s_epochs)
    trainer = D2STrainer(config, device=settings.device, progress=settings.progress)
    result = trainer.fit(task.pairs_data)
    seconds = time.perf_counter() - started
    if not trainer.dist.is_main:  # another rank of a torchrun job: it trained its share, rank 0 indexes
        return None, seconds
    model = D2S(result.head.cpu())
    index = D2SIndex(path, verbose=False)
    model.image_indexer(index, overwrite=True).index(documents[["docno", "doc_vec"]].to_dict("records"))
    query = model.query_encoder()
    return System("d2s", query >> index.retriever(num_results=settings.num_results), query, index), seconds


def _baselines(
    task, docs: pd.DataFrame, settings, workdir: Path, names: Sequence[str]
) -> tuple[list[System], dict]:
    systems, seconds = [], {}
    if not init_from_env().is_main:  # under torchrun only the d2s head trains on every rank
        names = [n for n in names if n == "d2s"]
    if "bm25" in names:
        bm25 = bm25_text_retriever(workdir / "bm25.pisa", docs, num_results=settings.num_results)
        systems.append(System("bm25", _query_text_only() >> bm25))
        seconds["bm25"] = 0.0
    if "dense" in names:
        flex = dense_flex_index(workdir / "dense.flex", docs[["docno", "doc_vec"]].to_dict("records"))
        systems.append(System("dense", flex.np_retriever(num_results=settings.num_results)))
        seconds["dense"] = 0.0
    if "d2s" in names:
        system, seconds["d2s"] = _d2s_system(task, docs, settings, workdir / "d2s.index")
        systems += [system] if system is not None else []
    return systems, seconds


def _query_text_only():
    """Keep ``qid`` and ``query`` only (BM25 needs no vectors; PISA's frame must not carry arrays)."""
    import pyterrier as pt

    return pt.apply.generic(lambda df: df[["qid", "query"]])


def _train_presets(
    train: SuggestTask, settings: SuggestSettings, workdir: Path, systems: Sequence[str]
) -> tuple[dict[str, SuggestModel], dict[str, float]]:
    """Every preset of ``systems`` trained (on every rank under ``torchrun``), and its training seconds."""
    trained, seconds = {}, {}
    for name in [s for s in systems if s in PRESETS]:
        trained[name], seconds[name] = train_preset(name, train, settings, workdir / name)
    return trained, seconds


def run_image_suggestion(
    task: SuggestTask,
    workdir: str | os.PathLike,
    systems: Sequence[str] = SYSTEMS,
    settings: SuggestSettings | None = None,
    evaluation: EvaluationSet | None = None,
) -> list[dict]:
    """Train ``systems`` (names of :data:`SYSTEMS`) on ``task``'s training images, index and evaluate them on
    ``evaluation`` (default: ``task``'s test images, one relevant image per query; AToMiC: its validation
    topics, judged images plus unjudged ones, and its qrels).

    Returns one record per system: ``name``, nDCG@10, RR@10, R@1, R@10, ``flops``, ``q_nnz``, ``d_nnz`` (None
    for systems without sparse vectors), ``train_seconds``, ``ms_per_query``; none on the other
    ranks of a ``torchrun`` job.
    """
    settings = settings or SuggestSettings()
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown system {unknown[0]!r}; systems: {', '.join(SYSTEMS)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train = task.subset(TRAIN_SPLITS)
    evaluation = evaluation or task.subset("test").evaluation_set()
    if len(train) < 2 or len(evaluation.topics) == 0:
        raise ValueError(
            f"{task.name}: {len(train)} training images and {len(evaluation.topics)} test queries; need >= 2 and >= 1"
        )
    trained, seconds = _train_presets(train, settings, workdir, systems)
    main = init_from_env().is_main
    docs, k = evaluation.documents, settings.num_results
    built = [_sparse_system(n, m, docs, workdir / n / "index", k) for n, m in trained.items()] if main else []
    baselines, more = _baselines(task, docs, settings, workdir, systems)
    seconds.update(more)
    if not main:
        return []
    table = compare(built + baselines, evaluation.topics, evaluation.qrels, measures=MEASURES)
    return _records(table, seconds)


def _records(table: pd.DataFrame, seconds: dict) -> list[dict]:
    out = []
    for row in table.to_dict("records"):
        rec = {"name": row["name"]}
        rec.update({str(m): round(float(row[str(m)]), 4) for m in MEASURES})
        for key in ("flops", "q_nnz", "d_nnz"):
            value = row.get(key)
            rec[key] = None if value is None or pd.isna(value) else round(float(value), 2)
        rec["train_seconds"] = round(float(seconds.get(row["name"], 0.0)), 1)
        rec["ms_per_query"] = round(float(row["ms_per_query"]), 2)
        out.append(rec)
    return out
