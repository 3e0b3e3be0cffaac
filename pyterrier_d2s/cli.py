"""The ``d2s`` command line.

``d2s train`` trains a head on paired dense vectors and prints, as its last line, one JSON object with the
paper's numbers. The CLI prints; the library logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .data import PairedVectors

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a D2S head on dense vectors and report its effectiveness")
    p.add_argument("--data", required=True, help="packaged name (coco500), vectors directory or authors' dir")
    p.add_argument("--exp", default="c+w", choices=["0", "1", "c", "c+w"], help="expansion control (Table 2)")
    p.add_argument(
        "--eta", type=_finite_float, default=1e-3, help="η, sparsity regularisation weight (Eq. 7)"
    )
    p.add_argument("--lam", type=_finite_float, default=0.5, help="λ of Eq. 7")
    p.add_argument("--tau", type=_finite_float, default=1e-3, help="teacher temperature τ")
    p.add_argument(
        "--recipe",
        default="auto",
        choices=["auto", "paper"],
        help="defaults of the options below: computed from the training set's size (auto) or the paper's "
        "MSCOCO setting (paper: 200 epochs, batch 512, all 30,522 output tokens)",
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="default: from the recipe")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="default: from the recipe")
    p.add_argument(
        "--lr-proj", type=_finite_float, default=None, help="learning rate of W1 (default: recipe)"
    )
    p.add_argument(
        "--lr-vocab",
        type=_finite_float,
        default=None,
        help="learning rate of LayerNorm + W2 (default: recipe)",
    )
    p.add_argument(
        "--output-vocab",
        default=None,
        choices=["all", "captions", "caption-words"],
        help="tokens the head may output: every WordPiece token, those of the training captions, or their "
        "whole words without ## pieces (default: recipe; auto = caption-words)",
    )
    p.add_argument(
        "--caption-draw",
        default="batch",
        choices=["batch", "caption"],
        help="caption-level expansion draw E_C once per batch (Algorithm 1) or once per caption",
    )
    p.add_argument(
        "--own-terms",
        default="keep",
        choices=["keep", "word-draw"],
        help="own tokens always kept, or multiplied by the word-level draw E_k (EXPAND read literally)",
    )
    p.add_argument(
        "--init",
        default="embeddings",
        choices=["embeddings", "random"],
        help="W2 starts from the vocabulary's word embeddings (the paper) or at random",
    )
    p.add_argument(
        "--proj-init",
        default="default",
        choices=["default", "pca"],
        help="W1 starts at random (torch's default) or as the principal directions of the training vectors",
    )
    p.add_argument(
        "--regulariser",
        default="l1",
        choices=["l1", "flops"],
        help="sparsity term of Eq. 7: L1 (the paper) or SPLADE's FLOPS regulariser",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output directory for the head (and its checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over: a checkpoint in --out is kept aside (checkpoint.pt.corrupt if unreadable, else "
        "checkpoint.pt.old) instead of resumed",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the 80/10/10 train/val/test split by image of data without split labels (default 0)",
    )
    p.add_argument(
        "--no-split",
        action="store_true",
        help="train, validate and report on every image (the report then says held_out: false)",
    )
    p.add_argument(
        "--fold", type=int, default=None, help="with --num-folds K: test on fold F (0..K-1) of K image folds"
    )
    p.add_argument("--num-folds", type=int, default=None, help="number of image folds of --fold")


def training_split(data: PairedVectors, args: argparse.Namespace) -> PairedVectors:
    """The data ``d2s train`` trains on, split as its options say (a seeded split by image by default).

    Its split is written to ``args.out``/split.json before training, so that a killed run's checkpoint is
    tied to it: a checkpoint there from a run on another split is refused rather than resumed.
    """
    from .data import save_split

    data = _split_for_training(data, args)
    _refuse_checkpoint_of_another_split(data, args.out)
    save_split(data, args.out)
    return data


def _refuse_checkpoint_of_another_split(data: PairedVectors, out: str) -> None:
    from pathlib import Path

    from .data import SPLIT_FILE, describe_split, load_split
    from .training.trainer import CHECKPOINT_NAME

    old = load_split(out)
    if old is None or not (Path(out) / CHECKPOINT_NAME).is_file():
        return
    new = describe_split(data)
    if any(old.get(k) != new.get(k) for k in ("held_out", "test", "val")):
        raise ValueError(
            f"{Path(out) / CHECKPOINT_NAME} is from a run on another split ({Path(out) / SPLIT_FILE} differs); "
            "use another --out or delete it"
        )


def _split_for_training(data: PairedVectors, args: argparse.Namespace) -> PairedVectors:
    from .data import ensure_split, has_train_split, without_split

    seed = getattr(args, "split_seed", None)
    fold, num_folds = getattr(args, "fold", None), getattr(args, "num_folds", None)
    if (fold is None) != (num_folds is None):
        raise ValueError("give both --fold and --num-folds, or neither")
    chosen = [o for o, v in (("--split-seed", seed), ("--fold", fold)) if v is not None]
    if getattr(args, "no_split", False):
        if chosen:
            raise ValueError(f"--no-split cannot be combined with {' and '.join(chosen)}")
        print(
            f"d2s train: note: --no-split: trained, validated and reported on the same "
            f"{len(data.image_ids)} images of {data.name} (held_out: false)",
            file=sys.stderr,
        )
        return without_split(data)
    if has_train_split(data):
        # the data's own split (Karpathy's, coco500's fixed one) is what its index and evaluation use too
        if chosen:
            raise ValueError(
                f"{' and '.join(chosen)}: {data.name} has its own split labels ({', '.join(data.splits)}); "
                "these options split data without labels (--no-split trains on everything)"
            )
        if "test" not in data.splits:
            print(
                f"d2s train: note: {data.name} has split labels but no test split: the numbers are on every "
                "image (held_out: false)",
                file=sys.stderr,
            )
        return data
    return ensure_split(data, seed=0 if seed is None else seed, fold=fold, num_folds=num_folds)


def cmd_train(args: argparse.Namespace) -> dict:
    from .data import DataError, load_all_captions, load_pairs, split_summary
    from .evaluation import dense_metrics, evaluate_head
    from .training import D2STrainer, TrainConfig

    started = time.perf_counter()
    data = training_split(load_pairs(args.data), args)
    config = TrainConfig(
        exp=args.exp,
        eta=args.eta,
        lam=args.lam,
        tau=args.tau,
        seed=args.seed,
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_proj=args.lr_proj,
        lr_vocab=args.lr_vocab,
        output_vocab=args.output_vocab,
        caption_draw=args.caption_draw,
        own_terms=args.own_terms,
        init=args.init,
        proj_init=args.proj_init,
        regulariser=args.regulariser,
    )
    if getattr(args, "restart", False):
        from pathlib import Path

        from .training.trainer import CHECKPOINT_NAME

        ckpt = Path(args.out) / CHECKPOINT_NAME
        if ckpt.exists():
            import torch

            try:
                torch.load(ckpt, map_location="cpu", weights_only=True)
                suffix = ".old"
            except Exception:  # unreadable: truncated, empty, foreign
                suffix = ".corrupt"
            ckpt.replace(ckpt.with_name(CHECKPOINT_NAME + suffix))
    trainer = D2STrainer(config, checkpoint_dir=args.out, device=args.device, progress=not args.quiet)
    result = trainer.fit(data, dense_encoder=data.meta.get("dense_encoder"))
    result.head.save_pretrained(args.out)
    test = data.evaluation_split()
    split = split_summary(data)
    try:  # every caption of each image, where the data ship them (coco500: COCO's five)
        all_captions = load_all_captions(args.data)
    except (DataError, OSError):
        all_captions = None
    sparse = evaluate_head(result.head, test, all_captions=all_captions)
    dense = dense_metrics(test)
    report = {
        "data": str(args.data),
        "exp": args.exp,
        "eta": args.eta,
        "held_out": split.pop("held_out"),
        "split": split,
        "dense_r1": dense["R@1"],
        "sparse_r1": sparse["R@1"],
        "sparse_r5": sparse["R@5"],
        "sparse_r10": sparse["R@10"],
        "sparse_mrr10": sparse["RR@10"],
        "flops": sparse["flops"],
        "exact20": sparse["exact20"],
        "semantic20": sparse["semantic20"],
        "image_exact20": sparse["image_exact20"],
        "q_nnz": sparse["q_nnz"],
        "d_nnz": sparse["d_nnz"],
        **result.config.recipe_values(),
        "caption_draw": args.caption_draw,
        "own_terms": args.own_terms,
        "init": args.init,
        "proj_init": args.proj_init,
        "regulariser": args.regulariser,
        "output_tokens": result.head.output_vocab_size,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - started, 1),
        "out": str(args.out),
    }
    (result.head.config.extra or {}).update({"test": report})
    result.head.save_pretrained(args.out)
    return report


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="encode the images of a data set with a head and build a D2SIndex")
    p.add_argument("--model", required=True, help="head directory (from d2s train)")
    p.add_argument("--data", required=True, help="packaged name, vectors directory or authors' dir")
    p.add_argument("--out", required=True, help="index directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    p.add_argument(
        "--all-splits",
        action="store_true",
        help="index every image, not only the test split (the head's split.json, or the data's own)",
    )


def cmd_index(args: argparse.Namespace) -> dict:
    from .data import load_pairs, split_for_head
    from .index import D2SIndex
    from .model import D2S

    started = time.perf_counter()
    model = D2S.from_pretrained(args.model)
    data = load_pairs(args.data)
    if args.all_splits:
        images, which = data, "all"
    else:
        # the head's test images: those of its split.json (which the data's own labels must agree with)
        split = split_for_head(data, args.model)
        images, which = split.evaluation_split(), "test" if "test" in split.splits else "all"
    index = D2SIndex(args.out)
    model.image_indexer(index, overwrite=args.overwrite).index(images.corpus_iter())
    meta = index.meta
    return {
        "index": str(args.out),
        "documents": len(index),
        "images": which,
        "doc_scale": meta.get("doc_scale"),
        "query_scale": meta.get("query_scale"),
        "doc_mass_lost": meta.get("doc_mass_lost"),
        "mean_doc_nnz": meta.get("mean_doc_nnz"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="compare dense, sparse, no-expansion and rescored retrieval")
    p.add_argument("--model", required=True, help="head directory (from d2s train)")
    p.add_argument("--index", required=True, help="index directory (from d2s index)")
    p.add_argument("--data", required=True, help="the data set the index was built from")
    p.add_argument(
        "--candidates", type=_positive_int, default=100, help="candidates re-scored by the expansion rescorer"
    )
    p.add_argument(
        "--num-results", type=_positive_int, default=100, help="results per query of the other systems"
    )
    p.add_argument(
        "--noexp-model",
        default=None,
        help="a head trained with --exp 0 whose index (--noexp-index) gives the no-expansion run and the "
        "rescorer's candidates, as in the paper's Table 6; default: --model's own terms",
    )
    p.add_argument("--noexp-index", default=None, help="the index of --noexp-model over the same images")


SYSTEM_NAMES = ("dense", "d2s-expanded", "d2s-noexp", "d2s-noexp>>rescore")


def evaluation_systems(
    model,
    index,
    dense_index,
    candidates: int,
    num_results: int,
    noexp_model=None,
    noexp_index=None,
) -> list:
    """The four systems of ``d2s evaluate``, named as in :data:`SYSTEM_NAMES`.

    The no-expansion run and the rescorer's first stage use the caption's own terms; by default they are
    ``model``'s own-term weights over ``index``. With ``noexp_model``/``noexp_index`` (a head trained with
    ``exp="0"`` and its index) they come from that model, which is how the paper's Table 6 pairs an exp=0
    first stage with re-scoring by the expanded model; the rescorer always scores with ``model``/``index``.
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


def cmd_evaluate(args: argparse.Namespace) -> list[dict]:
    import tempfile

    import pandas as pd

    from .data import load_pairs, split_for_head
    from .experiment import compare, dense_flex_index
    from .index import D2SIndex
    from .model import D2S

    model = D2S.from_pretrained(args.model)
    split = split_for_head(load_pairs(args.data), args.model)
    data = split.evaluation_split()
    index = D2SIndex(args.index)
    if not index.built():
        raise FileNotFoundError(f"{args.index} is not a built D2S index (run d2s index first)")
    _check_index_images(index, data, args.index)
    _check_built_with(index, model, args.index, args.model)
    noexp_model = noexp_index = None
    if (args.noexp_model is None) != (args.noexp_index is None):
        raise ValueError("give both --noexp-model and --noexp-index, or neither")
    if args.noexp_model is not None:
        noexp_model = D2S.from_pretrained(args.noexp_model)
        noexp_index = D2SIndex(args.noexp_index)
        if not noexp_index.built() or len(noexp_index) != len(index):
            raise ValueError(f"{args.noexp_index} is not a built index of the same {len(index)} images")
        _check_built_with(noexp_index, noexp_model, args.noexp_index, args.noexp_model)
        # the first-stage head must not have trained on the test images either
        split_for_head(split, args.noexp_model)
    elif model.head.config.exp != "0":
        print(
            f"d2s evaluate: note: d2s-noexp and the rescorer's candidates use this exp={model.head.config.exp} "
            "head's weights on the captions' own tokens; the paper's Table 6 takes them from an exp=0 head "
            "(--noexp-model/--noexp-index, as d2s demo does)",
            file=sys.stderr,
        )
    if "test" not in split.splits:
        print(
            f"d2s evaluate: note: {data.name} has no test split for this head: the numbers are on every image, "
            "including those it was trained on",
            file=sys.stderr,
        )
    topics, qrels = data.topics(), data.qrels()
    with tempfile.TemporaryDirectory(prefix="d2s-dense-") as tmp:
        dense = dense_flex_index(f"{tmp}/dense.flex", data.corpus_iter())
        systems = evaluation_systems(
            model, index, dense, args.candidates, args.num_results, noexp_model, noexp_index
        )
        table = compare(systems, topics, qrels, index=index, reference="dense")
    with pd.option_context(
        "display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format
    ):
        print(table.drop(columns=[c for c in table.columns if c.startswith("rho-")]).to_string(index=False))
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


def _check_index_images(index, data, where: str) -> None:
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


def _check_built_with(index, model, index_dir: str, model_dir: str) -> None:
    """Refuse to search an index with a head other than the one that encoded its images (silently wrong
    scores otherwise). Indexes that recorded no head (built by an older version, or from a matrix) pass."""
    recorded = (index.meta.get("built_with") or {}).get("head_fingerprint")
    if recorded is not None and recorded != model.head.fingerprint():
        raise ValueError(
            f"{index_dir} was built with another head than {model_dir}; index the images with this head "
            "(d2s index --model ... --overwrite) or pass the head that built it"
        )


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="verify every file of an index against its build's manifest (SHA-256)")
    p.add_argument("index", help="index directory")


def cmd_check(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from .index import D2SIndex
    from .index.integrity import verify

    index = D2SIndex(args.index)
    if not index.built():
        raise FileNotFoundError(f"{args.index} is not a built D2S index")
    problems = verify(Path(args.index))
    for problem in problems:
        print(f"d2s check: {problem}", file=sys.stderr)
    if problems:
        raise ValueError(f"{args.index}: {len(problems)} file(s) damaged; rebuild the index")
    index.forward()  # the structural checks too
    return {"index": str(args.index), "ok": True, "documents": len(index)}


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search an index with a caption of the data set or a text query")
    p.add_argument("--model", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("query", nargs="?", help="text query (needs a dense text encoder)")
    p.add_argument("--data", help="with --qid: take the query and its vector from this data set")
    p.add_argument("--qid", help="caption id in --data to use as the query")
    p.add_argument("-k", "--num-results", type=_positive_int, default=10)
    p.add_argument("--no-expansion", action="store_true", help="search with the caption's own terms only")
    p.add_argument(
        "--encoder",
        default=None,
        help="dense text encoder for text queries (default: the one the head records)",
    )


def cmd_search(args: argparse.Namespace) -> list[dict]:
    import pandas as pd

    from .data import load_pairs
    from .index import D2SIndex
    from .model import D2S

    encoder = args.encoder
    if encoder is None and args.qid is None:
        encoder = "auto"  # a text query needs the dense model the head was trained on
    model = D2S.from_pretrained(args.model, dense_encoder=encoder)
    if args.qid is not None:
        if args.data is None:
            raise ValueError("--qid needs --data")
        topics = load_pairs(args.data).topics()
        topics = topics[topics["qid"] == args.qid]
        if len(topics) == 0:
            raise KeyError(f"no caption with id {args.qid!r} in {args.data}")
    elif args.query:
        topics = pd.DataFrame({"qid": ["q"], "query": [args.query]})
    else:
        raise ValueError("give a text query or --data and --qid")
    index = D2SIndex(args.index)
    if not index.built():
        raise FileNotFoundError(f"{args.index} is not a built D2S index (run d2s index first)")
    _check_built_with(index, model, args.index, args.model)
    pipeline = model.query_encoder(expansion=not args.no_expansion) >> index.retriever(
        num_results=args.num_results
    )
    results = pipeline(topics)
    print(f"query: {topics['query'].iloc[0]}")
    for r in results.itertuples():
        print(f"{r.rank + 1:3d}  {r.docno:>12}  {r.score:.4f}")
    return [{"docno": r.docno, "score": float(r.score), "rank": int(r.rank)} for r in results.itertuples()]


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="train, index and evaluate on the embedded COCO-500 set (offline, minutes)"
    )
    p.add_argument("--out", default="runs/demo", help="where the head and the index go")
    p.add_argument("--exp", default="c+w", choices=["0", "1", "c", "c+w"])
    p.add_argument("--eta", type=_finite_float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=None, help="default: from the recipe")
    p.add_argument(
        "--noexp-epochs",
        type=int,
        default=None,
        help="epochs of the exp=0 head whose index is the rescorer's first stage (default: from the recipe; "
        "0: no such head, the first stage then uses the main head's own-term weights)",
    )


# How many captions (the first test captions of the set) the demo explains, in the spirit of the paper's Table 4.
DEMO_CAPTIONS = 3


def test_caption_rows(data, n: int) -> list[int]:
    """The first ``n`` caption rows of ``data``'s evaluation split (all captions without a test split)."""
    if "test" not in data.splits:
        return list(range(min(n, len(data))))
    return [int(r) for r in np.flatnonzero(data.image_split[data.caption_image] == "test")[:n]]


def explain_rows(model, data, rows: Sequence[int], k: int = 10) -> list[dict]:
    """Top-k terms of captions and of their images; ``*`` marks a term that occurs in the caption."""
    captions = model.encode_texts([data.caption_texts[r] for r in rows], data.caption_vectors[list(rows)])
    images = model.encode_images(data.image_vectors[data.caption_image[list(rows)]])
    own = model.vocab.token_ids([data.caption_texts[r] for r in rows])
    out = []
    for n, r in enumerate(rows):
        own_toks = set(model.vocab.decode(own[n]))
        out.append(
            {
                "caption_id": data.caption_ids[r],
                "caption": data.caption_texts[r],
                "image_id": data.image_ids[data.caption_image[r]],
                "split": None if data.image_split is None else str(data.image_split[data.caption_image[r]]),
                "caption_terms": [t for t, _ in model.top_terms(captions[n], k)[0]],
                "image_terms": [t for t, _ in model.top_terms(images[n], k)[0]],
                "own_terms": sorted(own_toks),
            }
        )
    return out


def _marked(terms: list[str], own: set[str]) -> str:
    return " ".join(t + ("*" if t in own else "") for t in terms)


def print_explained(items: list[dict]) -> None:
    for item in items:
        own = set(item["own_terms"])
        print(f"\n{item['caption']}  (caption {item['caption_id']}, image {item['image_id']})")
        print(f"  caption: {_marked(item['caption_terms'], own)}")
        print(f"  image:   {_marked(item['image_terms'], own)}")


def _demo_train(args: argparse.Namespace, exp: str, epochs: int | None, out: str) -> dict:
    # parsed like the command line, so every option of `d2s train` gets its default
    argv = ["train", "--data", "coco500", "--exp", exp, "--eta", repr(args.eta), "--seed", str(args.seed)]
    argv += ["--out", out] + ([] if epochs is None else ["--epochs", str(epochs)])
    return cmd_train(build_parser().parse_args(argv))


def _demo_index(model: str, out: str) -> dict:
    return cmd_index(
        argparse.Namespace(model=model, data="coco500", out=out, overwrite=True, all_splits=False)
    )


def cmd_demo(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from .data import load_pairs, split_for_head
    from .model import D2S

    if args.noexp_epochs is not None and args.noexp_epochs < 0:
        raise ValueError(f"--noexp-epochs must be >= 0, not {args.noexp_epochs}")
    started = time.perf_counter()
    out = Path(args.out)
    paired = args.noexp_epochs != 0
    stages = 5 if paired else 4
    stage = iter(range(1, stages + 1))
    print(
        f"== {next(stage)}/{stages} training a D2S head on the 400 training images of coco500 (CLIP ViT-B/16)",
        flush=True,
    )
    train = _demo_train(args, args.exp, args.epochs, str(out / "head"))
    print(json.dumps(train), flush=True)
    report: dict = {"train": train}
    if paired:
        # the paper's Table 6 pairing: an exp=0 head's index is the rescorer's first stage (a c+w head's own
        # terms carry ~2 % of its query weight on this small set, too little to find the candidates)
        print(
            f"== {next(stage)}/{stages} training an exp=0 head (the captions' own terms) for the first stage",
            flush=True,
        )
        report["train_noexp"] = _demo_train(args, "0", args.noexp_epochs, str(out / "head-noexp"))
        print(json.dumps(report["train_noexp"]), flush=True)
    print(f"== {next(stage)}/{stages} indexing the 50 test images (PISA + forward store)", flush=True)
    report["index"] = _demo_index(str(out / "head"), str(out / "index"))
    print(json.dumps(report["index"]), flush=True)
    evaluate = ["evaluate", "--model", str(out / "head"), "--index", str(out / "index"), "--data", "coco500"]
    if paired:
        report["index_noexp"] = _demo_index(str(out / "head-noexp"), str(out / "index-noexp"))
        print(json.dumps(report["index_noexp"]), flush=True)
        evaluate += ["--noexp-model", str(out / "head-noexp"), "--noexp-index", str(out / "index-noexp")]
    print(
        f"== {next(stage)}/{stages} dense vs sparse vs no expansion vs no expansion >> expansion", flush=True
    )
    # parsed like the command line, so every option of `d2s evaluate` gets its default
    report["evaluate"] = cmd_evaluate(build_parser().parse_args(evaluate))
    print(
        f"== {next(stage)}/{stages} top-10 terms of captions and their images (* = in the caption), "
        "cf. the paper's Table 4"
    )
    model = D2S.from_pretrained(out / "head")
    data = split_for_head(load_pairs("coco500"), out / "head")
    report["terms"] = explain_rows(model, data, test_caption_rows(data, DEMO_CAPTIONS))
    print_explained(report["terms"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _add_encode(sub) -> None:
    p = sub.add_parser(
        "encode", help="encode images and captions with a dense model into a vectors directory (resumable)"
    )
    p.add_argument(
        "--encoder", required=True, help="transformers BLIP/CLIP name or dir, or lavis:<model>/<type>"
    )
    p.add_argument(
        "--images", required=True, help="image directory, or a .jsonl (image_id, file) / text list"
    )
    p.add_argument(
        "--captions",
        required=True,
        help="JSONL (caption_id, image_id, caption) or Karpathy dataset_meta.json",
    )
    p.add_argument(
        "--out", required=True, help="vectors directory to write (an unfinished run there resumes)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=32, help="inputs per forward pass")
    p.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=1024,
        help="items per committed chunk (at most lost on a kill)",
    )
    p.add_argument(
        "--skip-bad-images", action="store_true", help="leave unreadable images (and their captions) out"
    )
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "fp16", "bf16", "fp32"], help="GPU autocast"
    )
    p.add_argument("--overwrite", action="store_true", help="start afresh, removing what is at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_encode(args: argparse.Namespace) -> dict:
    from .encoders import load_encoder
    from .encoders.cache import encode_vectors_dir
    from .encoders.inputs import read_encode_inputs

    images, captions = read_encode_inputs(args.images, args.captions)
    encoder = load_encoder(
        args.encoder, batch_size=args.batch_size, device=args.device, precision=args.precision
    )
    summary = encode_vectors_dir(
        encoder,
        images,
        captions,
        args.out,
        chunk_size=args.chunk_size,
        on_error="skip" if args.skip_bad_images else "raise",
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if summary.skipped_images:
        print(f"skipped {len(summary.skipped_images)} unreadable image(s):", file=sys.stderr)
        for reason in summary.skipped_images.values():
            print(f"  {reason}", file=sys.stderr)
    return summary.as_dict()


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="the paper's figures (needs matplotlib)")
    kinds = p.add_subparsers(dest="kind", required=True)
    t = kinds.add_parser("tradeoff", help="R@1 vs FLOPs across heads (Fig. 2a)")
    t.add_argument("runs", nargs="+", help="head directories written by d2s train")
    t.add_argument("--out", required=True, help="PNG file")
    o = kinds.add_parser("overlap", help="histogram of top-10 overlap with dense (Fig. 2b)")
    o.add_argument("--model", required=True)
    o.add_argument("--index", required=True)
    o.add_argument("--data", required=True)
    o.add_argument("--out", required=True, help="PNG file")
    o.add_argument("-k", type=_positive_int, default=10)


def cmd_plot(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from . import plots

    if args.kind == "tradeoff":
        reports = []
        for run in args.runs:
            cfg_file = Path(run) / "config.json"
            if not cfg_file.is_file():
                raise FileNotFoundError(f"{run} is not a head directory (no config.json)")
            report = json.loads(cfg_file.read_text()).get("extra", {}).get("test")
            if report is None:
                raise ValueError(f"{run} has no test report: train it with d2s train")
            reports.append(report)
        dense = [r["dense_r1"] for r in reports]
        plots.tradeoff_figure(reports, args.out, dense_r1=float(np.mean(dense)))
        return {
            "out": args.out,
            "runs": len(reports),
            "points": [(r["flops"], r["sparse_r1"]) for r in reports],
        }

    from .data import load_pairs, split_for_head
    from .evaluation import dense_top_k, run_frame
    from .index import D2SIndex
    from .measures import overlap_at_k
    from .model import D2S

    model = D2S.from_pretrained(args.model)
    data = split_for_head(load_pairs(args.data), args.model).evaluation_split()
    topics = data.topics()
    sparse = (model.query_encoder() >> D2SIndex(args.index).retriever(num_results=args.k))(topics)
    idx, val = dense_top_k(data.caption_vectors, data.image_vectors, k=args.k)
    dense = run_frame(data.caption_ids, data.image_ids, idx, val)
    overlaps = overlap_at_k(sparse, dense, args.k).reindex(topics["qid"], fill_value=0.0)
    plots.overlap_figure(overlaps.to_numpy(), args.out, k=args.k)
    return {"out": args.out, "queries": len(overlaps), f"mean_overlap@{args.k}": float(overlaps.mean())}


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="top terms of a caption or an image (* = in the caption)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--id",
        default=None,
        help="a caption id or an image id of --data (default: the first 3 captions of the head's test images)",
    )
    p.add_argument("-k", type=_positive_int, default=20)


def cmd_explain(args: argparse.Namespace) -> dict:
    from .data import load_pairs, split_for_head
    from .model import D2S

    model = D2S.from_pretrained(args.model)
    data = split_for_head(load_pairs(args.data), args.model)
    if args.id is None:
        rows = test_caption_rows(data, DEMO_CAPTIONS)
    elif args.id in data.caption_ids:
        rows = [data.caption_ids.index(args.id)]
    elif args.id in data.image_ids:
        image_row = data.image_ids.index(args.id)
        rows = [int(r) for r in np.flatnonzero(data.caption_image == image_row)]
    else:
        raise KeyError(f"{args.id!r} is neither a caption id nor an image id of {args.data}")
    items = explain_rows(model, data, rows, k=args.k)
    if "test" in data.splits and any(item["split"] != "test" for item in items):
        print(
            f"d2s explain: note: {args.id!r} is not a test image of this head ({items[0]['split']}): "
            "its terms were seen in training",
            file=sys.stderr,
        )
    print_explained(items)
    return {"items": items}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="d2s", description="Dense2Sparse multimodal learned sparse retrieval"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_index(sub)
    _add_evaluate(sub)
    _add_search(sub)
    _add_demo(sub)
    _add_plot(sub)
    _add_explain(sub)
    _add_encode(sub)
    _add_check(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        commands = {
            "train": cmd_train,
            "index": cmd_index,
            "evaluate": cmd_evaluate,
            "search": cmd_search,
            "demo": cmd_demo,
            "plot": cmd_plot,
            "explain": cmd_explain,
            "encode": cmd_encode,
            "check": cmd_check,
        }
        report = commands[args.command](args)
        # strict JSON: a NaN or infinite measure is printed as null, never as the non-JSON NaN
        print(json.dumps(_json_safe(report), allow_nan=False))
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError, FloatingPointError) as e:
        if args.verbose:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"d2s {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


def _json_safe(value):
    """``value`` with every non-finite float replaced by ``None`` (numpy scalars become Python numbers)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
