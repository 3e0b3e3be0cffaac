"""The ``d2s`` command line: it parses arguments, calls the library and prints.

Every subcommand is one library function a notebook can call with plain arguments:
``train`` :func:`~pyterrier_d2s.training_run.train_head`, ``index`` / ``check`` / ``search``
:mod:`pyterrier_d2s.indexing`, ``evaluate`` :func:`~pyterrier_d2s.index_evaluation.evaluate_index`,
``demo`` :func:`~pyterrier_d2s.demo.run_demo`, ``explain`` :func:`~pyterrier_d2s.explain.explain`,
``encode`` :func:`~pyterrier_d2s.encoding.encode_dataset`, ``plot`` :mod:`pyterrier_d2s.plots`. Each prints,
as its last line, one JSON object (or list) with its report. The CLI prints; the library logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["build_parser", "main"]


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


def _note(command: str) -> Callable[[str], None]:
    """A library ``notify`` callback that prints ``d2s <command>: note: ...`` on stderr."""
    return lambda message: print(f"d2s {command}: note: {message}", file=sys.stderr)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a D2S head on dense vectors and report its effectiveness")
    p.add_argument("--data", required=True, help="packaged name (coco500), vectors directory or authors' dir")
    _add_loss_options(p)
    _add_recipe_options(p)
    _add_expansion_init_and_regulariser_options(p)
    _add_run_options(p)
    _add_split_options(p)


def _add_loss_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exp", default="c+w", choices=["0", "1", "c", "c+w"], help="expansion control (Table 2)")
    p.add_argument(
        "--eta", type=_finite_float, default=1e-3, help="η, sparsity regularisation weight (Eq. 7)"
    )
    p.add_argument("--lam", type=_finite_float, default=0.5, help="λ of Eq. 7")
    p.add_argument(
        "--tau",
        type=_finite_float,
        default=None,
        help="teacher temperature τ (default: from the recipe; the paper's 1e-3, 0.01 with --candidates all-images)",
    )
    p.add_argument(
        "--candidates",
        choices=("batch", "all-images"),
        default=None,
        help="images each step's captions are scored against: the batch's (the paper) or every training image "
        "(default: from the recipe; all-images up to 4,096 training images)",
    )


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
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


def _add_expansion_init_and_regulariser_options(p: argparse.ArgumentParser) -> None:
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
        "--own-token-fit",
        type=int,
        default=0,
        metavar="STEPS",
        help="after the text-space start, fit W2 for STEPS steps to predict the training captions' own tokens: "
        "more caption terms in the output (Exact@20) at a lower R@1 (default 0: off)",
    )
    p.add_argument(
        "--init",
        default=None,
        choices=["embeddings", "random", "text-space"],
        help="start of the head: W2 from the vocabulary's word embeddings (the paper; the 'paper' recipe's), at "
        "random, or W1 + W2 from a sentence encoder's space fitted on the training captions (the 'auto' recipe's)",
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


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output directory for the head (and its checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--negatives",
        choices=("global", "local"),
        default="global",
        help="under torchrun: in-batch negatives over the global batch (the one-process loss; each step "
        "gathers the ranks' |V|-wide outputs) or over each rank's own rows (nothing gathered)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over: a checkpoint in --out is kept aside (checkpoint.pt.corrupt if unreadable, else "
        "checkpoint.pt.old) instead of resumed",
    )


def _add_split_options(p: argparse.ArgumentParser) -> None:
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


def cmd_train(args: argparse.Namespace) -> dict | None:
    from .training import TrainConfig
    from .training_run import train_head

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
        own_token_fit=args.own_token_fit,
        init=args.init,
        proj_init=args.proj_init,
        regulariser=args.regulariser,
        negatives=args.negatives,
        candidates=args.candidates,
    )
    report = train_head(
        args.data,
        args.out,
        config,
        split_seed=args.split_seed,
        fold=args.fold,
        num_folds=args.num_folds,
        no_split=args.no_split,
        restart=args.restart,
        device=args.device,
        progress=not args.quiet,
        notify=_note("train"),
    )
    return None if report.get("rank", 0) else report  # under torchrun rank 0 alone prints


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="encode the images of a data set with a head and build a D2SIndex")
    p.add_argument("--model", default=None, help="head directory (from d2s train)")
    p.add_argument(
        "--data",
        nargs="+",
        default=None,
        help="packaged name, vectors directory or authors' dir; several (the parts of a sharded d2s encode) "
        "are indexed one by one and merged",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="INDEX",
        help="instead: merge these built indexes (per-shard d2s index outputs) into --out",
    )
    p.add_argument("--out", required=True, help="index directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    p.add_argument(
        "--all-splits",
        action="store_true",
        help="index every image, not only the test split (the head's split.json, or the data's own)",
    )


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="compare dense, sparse, no-expansion and rescored retrieval")
    p.add_argument("--model", default=None, help="head directory (from d2s train)")
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


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="verify every file of an index against its build's manifest (SHA-256)")
    p.add_argument("index", help="index directory")


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
    p.add_argument(
        "--explain",
        action="store_true",
        help="per result, the terms that made its score (query × image weight)",
    )
    p.add_argument(
        "--html", metavar="FILE", help="write a self-contained HTML page of the results and their terms"
    )
    p.add_argument(
        "--images", metavar="DIR", help="with --data: image files (its images.jsonl 'file') for thumbnails"
    )


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="train, index and evaluate on the embedded COCO-500 set (offline, minutes)"
    )
    p.add_argument("--out", default="runs/demo", help="where the head and the index go")
    p.add_argument("--exp", default="c+w", choices=["0", "1", "c", "c+w"])
    p.add_argument("--eta", type=_finite_float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=_positive_int, default=None, help="default: from the recipe")
    p.add_argument(
        "--noexp-epochs",
        type=int,
        default=None,
        help="epochs of the exp=0 head whose index is the rescorer's first stage (default: from the recipe; "
        "0: no such head, the first stage then uses the main head's own-term weights)",
    )


def _add_encode(sub) -> None:
    p = sub.add_parser(
        "encode", help="encode images and captions with a dense model into a vectors directory (resumable)"
    )
    p.add_argument(
        "--encoder", default=None, help="transformers BLIP/CLIP name or dir, or lavis:<model>/<type>"
    )
    p.add_argument("--images", default=None, help="image directory, or a .jsonl (image_id, file) / text list")
    p.add_argument(
        "--captions",
        default=None,
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
    p.add_argument("--shard", type=int, default=None, help="encode only shard I (0-based) of --num-shards")
    p.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help="with --shard: the number of shards; each writes --out/part-IIIII-of-NNNNN (under torchrun: "
        "one shard per rank, merged by rank 0)",
    )
    p.add_argument(
        "--merge", action="store_true", help="merge the finished parts in --out into one vectors directory"
    )
    p.add_argument("--keep-parts", action="store_true", help="with --merge: keep the parts afterwards")


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


def cmd_index(args: argparse.Namespace) -> dict:
    from .indexing import index_images, merge_index_parts

    if args.merge:
        if args.model or args.data:
            raise ValueError("--merge takes built indexes: give it no --model or --data")
        return merge_index_parts(args.merge, args.out, overwrite=args.overwrite)
    if not args.model or not args.data:
        raise ValueError("--model and --data are required (except with --merge)")
    data = args.data[0] if len(args.data) == 1 else args.data
    return index_images(args.model, data, args.out, overwrite=args.overwrite, all_splits=args.all_splits)


def cmd_evaluate(args: argparse.Namespace) -> list[dict]:
    from .index_evaluation import comparison_records, evaluate_index, format_comparison

    table = evaluate_index(
        args.model,
        args.index,
        args.data,
        candidates=args.candidates,
        num_results=args.num_results,
        noexp_model=args.noexp_model,
        noexp_index=args.noexp_index,
        notify=_note("evaluate"),
    )
    print(format_comparison(table))
    return comparison_records(table)


def cmd_check(args: argparse.Namespace) -> dict:
    from .indexing import check_index

    return check_index(args.index, on_problem=lambda problem: print(f"d2s check: {problem}", file=sys.stderr))


def cmd_search(args: argparse.Namespace) -> list[dict]:
    from .indexing import search

    hits = search(
        args.model,
        args.index,
        args.query,
        data=args.data,
        qid=args.qid,
        num_results=args.num_results,
        expansion=not args.no_expansion,
        encoder=args.encoder,
    )
    if not (args.explain or args.html):
        print(f"query: {hits.query}")
        for r in hits.results.itertuples():
            print(f"{r.rank + 1:3d}  {r.docno:>12}  {r.score:.4f}")
        return hits.records()
    from .explain import explain_search

    explained = explain_search(hits.results, args.index, query=hits.query, data=args.data, images=args.images)
    print(explained.format_text())
    if args.html:
        print(f"wrote {explained.save_html(args.html, title=f'D2S: {hits.query}')}", file=sys.stderr)
    return explained.records() if args.explain else hits.records()


def cmd_demo(args: argparse.Namespace) -> dict:
    from .demo import run_demo

    return run_demo(
        args.out,
        exp=args.exp,
        eta=args.eta,
        seed=args.seed,
        epochs=args.epochs,
        noexp_epochs=args.noexp_epochs,
        notify=_note("demo"),
    )


def cmd_encode(args: argparse.Namespace) -> dict | None:
    from .encoding import encode_dataset, merge_encoded_parts
    from .training.distributed import under_torchrun

    if args.merge:
        return merge_encoded_parts(args.out, keep_parts=args.keep_parts)
    if args.encoder is None or args.images is None or args.captions is None:
        raise ValueError("--encoder, --images and --captions are required (except with --merge)")
    summary = encode_dataset(
        args.encoder,
        args.images,
        args.captions,
        args.out,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        skip_bad_images=args.skip_bad_images,
        device=args.device,
        precision=args.precision,
        overwrite=args.overwrite,
        progress=not args.quiet,
        shard=args.shard,
        num_shards=args.num_shards,
    )
    if isinstance(summary, dict):  # rank 0 of a torchrun encode: the merge's summary
        return summary
    if args.shard is None and under_torchrun():
        return None  # the other ranks of a torchrun encode: rank 0 prints
    if summary.skipped_images:
        print(f"skipped {len(summary.skipped_images)} unreadable image(s):", file=sys.stderr)
        for reason in summary.skipped_images.values():
            print(f"  {reason}", file=sys.stderr)
    return summary.as_dict()


def cmd_plot(args: argparse.Namespace) -> dict:
    from . import plots

    if args.kind == "tradeoff":
        return plots.plot_tradeoff(args.runs, args.out)
    return plots.plot_overlap(args.model, args.index, args.data, args.out, k=args.k)


def cmd_explain(args: argparse.Namespace) -> dict:
    from .explain import explain, format_explained

    items = explain(args.model, args.data, args.id, k=args.k, notify=_note("explain"))
    print(format_explained(items))
    return {"items": items}


def _add_suggest(sub) -> None:
    from .suggest.experiment import SYSTEMS

    p = sub.add_parser(
        "suggest", help="image suggestion (arXiv 2402.07736): train M1-M4, compare with bm25, dense and d2s"
    )
    p.add_argument("--data", default="coco500", help="packaged name or vectors dir with >= 2 captions per image")
    p.add_argument("--out", default="runs/suggest", help="working directory (models, checkpoints, indexes)")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, metavar="NAME",
                   help=f"of {', '.join(SYSTEMS)} (default: all)")
    p.add_argument("--backbone", default=None, help="Hub name or dir (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--finetune", action="store_true", help="train the backbone too (default: frozen)")
    p.add_argument("--output-vocab", choices=("train", "all"), default="train",
                   help="tokens the expanding encoders may output (default: those of the training texts)")
    p.add_argument("--epochs", type=_positive_int, default=5)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_finite_float, default=1e-3)
    p.add_argument("--regulariser", choices=("flops", "l1"), default="flops")
    p.add_argument("--reg-query", type=_finite_float, default=1e-3)
    p.add_argument("--reg-doc", type=_finite_float, default=1e-3)
    p.add_argument("--d2s-epochs", type=_positive_int, default=None, help="default: the D2S recipe's")
    p.add_argument("--split-seed", type=int, default=0, help="seeded split of data without split labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negatives", choices=("global", "local"), default="global",
                   help="under torchrun: in-batch negatives over the global batch (the one-process loss) or per rank")
    p.add_argument("--no-dropout", action="store_true",
                   help="with --finetune: the backbone trains without dropout (a result independent of the ranks)")
    p.add_argument("--progress", action="store_true", help="show training progress bars")


def cmd_suggest(args: argparse.Namespace) -> list[dict]:
    from .suggest.experiment import SuggestSettings, run_image_suggestion
    from .suggest.task import build_task
    from .suggest.trainer import BiEncoderTrainConfig

    train = BiEncoderTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, regulariser=args.regulariser,
        reg_query=args.reg_query, reg_doc=args.reg_doc, seed=args.seed, negatives=args.negatives,
        dropout=not args.no_dropout,
    )
    settings = SuggestSettings(
        backbone=args.backbone, frozen=not args.finetune, output_vocab=args.output_vocab, train=train,
        d2s_epochs=args.d2s_epochs, progress=args.progress,
    )
    task = build_task(args.data, seed=args.split_seed)
    rows = run_image_suggestion(task, args.out, systems=args.systems, settings=settings)
    return rows or None  # under torchrun rank 0 alone prints (the other ranks return no records)


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
    _add_suggest(sub)
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
            "suggest": cmd_suggest,
        }
        report = commands[args.command](args)
        # strict JSON: a NaN or infinite measure is printed as null, never as the non-JSON NaN
        if report is not None:
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
