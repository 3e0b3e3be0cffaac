"""Image suggestion with multimodal learned sparse retrieval (arXiv 2402.07736): M1-M4 beside BM25, dense and D2S.

Text queries retrieve images; an image's document is its dense vector, its captions, or both (see
``pyterrier_d2s.suggest.presets`` for M1-M4). Every sparse system is indexed in a D2SIndex and searched by the
same engine; the table is on held-out test images.

    python examples/image_suggestion.py --demo                  # coco500, CPU, a few minutes (frozen backbone)
    python examples/image_suggestion.py --demo --small          # a smoke test: 1 epoch, tiny D2S run
    python examples/image_suggestion.py --data vectors/my-set   # any vectors dir with >= 2 captions per image
    python examples/image_suggestion.py --atomic --atomic-dir ATOMIC --clip openai/clip-vit-base-patch32 \
        --backbone distilbert-base-uncased --finetune --epochs 5
        # the paper's setting: trained on AToMiC's train pairs, evaluated on its validation topics against the
        # judged images + 10,000 unjudged ones (GPU + internet; the reader is pyterrier_d2s.data.atomic)

The last line printed is a JSON list, one object per system: ``name`` (M1, M2, M3, M4, bm25, dense, d2s),
``nDCG@10``, ``RR@10``, ``R@1``, ``R@10``, ``flops``, ``train_seconds`` (and q_nnz, d_nnz, ms_per_query).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd

#: AToMiC's own CLIP ViT-B/32 text -> image baseline, validation set, small setting (the AToMiC paper)
ATOMIC_CLIP_BASELINE = {"name": "atomic-clip-vit-b32 (published)", "RR@10": 0.198, "R@10": 0.350, "R@1000": 0.909}


def settings_from(args: argparse.Namespace):
    """The experiment settings of the command line."""
    from pyterrier_d2s.suggest.experiment import SuggestSettings
    from pyterrier_d2s.suggest.trainer import BiEncoderTrainConfig

    epochs = 1 if args.small else args.epochs
    train = BiEncoderTrainConfig(epochs=epochs, batch_size=args.batch_size, seed=args.seed)
    return SuggestSettings(
        backbone=args.backbone,
        frozen=not args.finetune,
        train=train,
        d2s_epochs=2 if args.small else args.d2s_epochs,
        progress=args.progress,
    )


def task_from_frames(
    queries: pd.DataFrame,
    documents: pd.DataFrame,
    qrels: pd.DataFrame,
    seed: int = 0,
    test_share: float = 0.1,
    val_share: float = 0.1,
):
    """A :class:`SuggestTask` from frames: ``queries`` (qid, query, optional query_vec), ``documents``
    (docno, text, optional doc_vec) and ``qrels`` (qid, docno, label > 0 relevant).

    One (query, document) pair per relevant document (its first relevant query), split by document with
    ``seed`` into ``test_share`` test, ``val_share`` validation and the rest training (at least one test
    document when ``test_share > 0``). Without ``doc_vec`` only the text presets (M2, M3) and BM25 apply;
    without ``query_vec`` the dense baseline does not.
    """
    from pyterrier_d2s.suggest.task import SuggestTask

    rel = qrels[qrels["label"] > 0].drop_duplicates("docno")
    q = queries.set_index("qid").loc[rel["qid"].astype(str)]
    d = documents.set_index("docno").loc[rel["docno"].astype(str)]
    n = len(rel)
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * n, dtype=object)
    order = rng.permutation(n)
    n_test = max(1, round(n * test_share)) if test_share > 0 else 0
    n_val = round(n * val_share)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    dim = len(d["doc_vec"].iloc[0]) if "doc_vec" in d else 1
    vectors = np.stack(d["doc_vec"].to_numpy()) if "doc_vec" in d else np.zeros((n, dim), np.float32)
    qvec = np.stack(q["query_vec"].to_numpy()) if "query_vec" in q else np.zeros((n, dim), np.float32)
    return SuggestTask(
        "frames", list(d.index.astype(str)), vectors.astype(np.float32), list(q["query"].astype(str)),
        qvec.astype(np.float32), [[t] for t in d["text"].astype(str)], split,
    )


def _systems_for(documents: pd.DataFrame, queries: pd.DataFrame) -> list[str]:
    """The systems frames allow: image presets and dense only with vectors (d2s needs a vectors directory)."""
    if "doc_vec" not in documents:
        return ["M2", "M3", "bm25"]
    return ["M1", "M2", "M3", "M4", "bm25"] + (["dense"] if "query_vec" in queries else [])


def run_on_frames(queries, documents, qrels, workdir: str, settings, seed: int = 0) -> list[dict]:
    """Train and evaluate on frames split 80/10/10 by relevant document (see :func:`task_from_frames`)."""
    from pyterrier_d2s.suggest.experiment import run_image_suggestion

    task = task_from_frames(queries, documents, qrels, seed)
    return run_image_suggestion(task, workdir, systems=_systems_for(documents, queries), settings=settings)


def atomic_frames(directory, split: str, negatives: int, encoder=None, max_pairs: int | None = None, seed: int = 0):
    """(queries, documents, qrels) of AToMiC's ``split``: its judged images plus ``negatives`` unjudged ones;
    ``max_pairs``: a seeded sample of that many relevant pairs (and their queries and images) first, so that
    only their images are read; ``encoder`` (a dense encoder, e.g. CLIP): ``doc_vec`` of each image's bytes
    and ``query_vec`` of each query's text (images that cannot be decoded are left out, logged)."""
    from pyterrier_d2s.data.atomic import load_atomic_split, read_image_bytes

    part = load_atomic_split(directory, split, judged_only=True, negatives=negatives, seed=seed)
    queries, docs, qrels = part.queries[["qid", "query"]], part.documents[["docno", "text"]], part.qrels
    if max_pairs is not None and (qrels["label"] > 0).sum() > max_pairs:
        qrels = qrels[qrels["label"] > 0].sample(n=max_pairs, random_state=seed)
        docs, queries = docs[docs["docno"].isin(qrels["docno"])], queries[queries["qid"].isin(qrels["qid"])]
    if encoder is not None:
        images = read_image_bytes(directory, docs["docno"].tolist())
        docs = docs[docs["docno"].isin(images)]
        found = encoder.encode_images_with_ids(
            [images[d] for d in docs["docno"]], ids=docs["docno"].tolist(), on_error="skip"
        )
        docs = docs.set_index("docno").loc[found.ids].reset_index()
        docs["doc_vec"] = list(found.vectors)
        queries = queries.assign(query_vec=list(encoder.encode_text(queries["query"].tolist())))
    return queries.reset_index(drop=True), docs.reset_index(drop=True), qrels.reset_index(drop=True)


def run_atomic(args: argparse.Namespace, encoder=None) -> list[dict]:
    """AToMiC: train on (a seeded sample of) its train split's judged pairs, evaluate on its validation
    topics against the validation judged images plus ``--negatives`` unjudged ones, with its qrels.

    ``--clip NAME`` (or ``encoder``) encodes the images and queries for M1, M4 and the dense baseline (AToMiC's
    own baseline is CLIP ViT-B/32 text -> image); without it only M2, M3 and BM25 run. The d2s baseline needs
    a vectors directory (``d2s encode``) and is not part of this path.
    """
    from pyterrier_d2s.suggest.experiment import run_image_suggestion
    from pyterrier_d2s.suggest.task import EvaluationSet

    if encoder is None and args.clip:
        from pyterrier_d2s.encoders import load_encoder

        encoder = load_encoder(args.clip)
    train = atomic_frames(args.atomic_dir, "train", 0, encoder, args.train_pairs, args.seed)
    task = task_from_frames(*train, seed=args.seed, test_share=0.0, val_share=0.0)
    topics, docs, qrels = atomic_frames(args.atomic_dir, "validation", args.negatives, encoder, seed=args.seed)
    evaluation = EvaluationSet(topics, docs, qrels)
    systems = [s for s in (args.systems or _systems_for(docs, topics)) if s != "d2s"]
    return run_image_suggestion(task, args.out, systems=systems, settings=settings_from(args), evaluation=evaluation)


def run_local(args: argparse.Namespace) -> list[dict]:
    """coco500 (``--demo``) or a vectors directory (``--data``)."""
    from pyterrier_d2s.suggest.experiment import SYSTEMS, run_image_suggestion
    from pyterrier_d2s.suggest.task import build_task

    task = build_task("coco500" if args.demo else args.data, seed=args.seed)
    return run_image_suggestion(task, args.out, systems=args.systems or list(SYSTEMS), settings=settings_from(args))


def print_table(rows: list[dict]) -> None:
    cols = ["name", "nDCG@10", "RR@10", "R@1", "R@10", "flops", "q_nnz", "d_nnz", "train_seconds"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join("-" if r.get(c) is None else (f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]))
                         for c in cols))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true", help="the offline coco500 five-caption task")
    source.add_argument("--data", help="a vectors directory with two or more captions per image")
    source.add_argument("--atomic", action="store_true", help="AToMiC validation (GPU + internet)")
    ap.add_argument("--atomic-dir", default=None, help="local AToMiC copy (default: $D2S_ATOMIC_DIR)")
    ap.add_argument("--negatives", type=int, default=10000, help="--atomic: random unjudged images beside")
    ap.add_argument("--train-pairs", type=int, default=100_000, help="--atomic: a seeded sample of train pairs")
    ap.add_argument("--clip", default=None, help="--atomic: dense encoder for images and queries, e.g. "
                    "openai/clip-vit-base-patch32 (M1, M4, dense)")
    ap.add_argument("--out", default="runs/image-suggestion")
    ap.add_argument("--systems", nargs="+", default=None, help="subset of M1 M2 M3 M4 bm25 dense d2s")
    ap.add_argument("--backbone", default=None, help="Hub name or dir (default: offline all-MiniLM-L6-v2)")
    ap.add_argument("--finetune", action="store_true", help="train the backbone too (GPU)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--d2s-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--small", action="store_true", help="1 epoch per preset, 2 for D2S: a smoke test")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        rows = run_atomic(args) if args.atomic else run_local(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"image_suggestion.py: error: {e}", file=sys.stderr)
        return 2
    print_table(rows)
    if args.atomic:  # the published reference, printed beside (not a system of this run: not in the JSON)
        print("reference:", json.dumps(ATOMIC_CLIP_BASELINE))
    print(f"total seconds: {time.perf_counter() - started:.0f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
