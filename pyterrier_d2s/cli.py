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

__all__ = ["main"]

# Settings for the packaged demo set. 500 pairs make one batch of 512, so the paper's recipe would give 200
# optimiser steps in all and a one-step first epoch (the p_c = 0 phase that teaches the head caption terms).
# Batches of 32 give 16 steps an epoch, and the vocabulary layer needs a larger step (1e-3 instead of 5e-5)
# to sparsify within 640 steps; measured on 2 CPU cores: about 100 s.
DATASET_DEFAULTS = {
    "coco500": {"epochs": 40, "batch_size": 32, "lr_proj": 1e-3, "lr_vocab": 1e-3},
}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a D2S head on dense vectors and report its effectiveness")
    p.add_argument("--data", required=True, help="packaged name (coco500), vectors directory or authors' dir")
    p.add_argument("--exp", default="c+w", choices=["0", "1", "c", "c+w"], help="expansion control (Table 2)")
    p.add_argument("--eta", type=float, default=1e-3, help="η, sparsity regularisation weight (Eq. 7)")
    p.add_argument("--lam", type=float, default=0.5, help="λ of Eq. 7")
    p.add_argument("--tau", type=float, default=1e-3, help="teacher temperature τ")
    p.add_argument("--epochs", type=int, default=None, help="default: 200 (40 for coco500)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 512 (32 for coco500)")
    p.add_argument("--lr-proj", type=float, default=None, help="learning rate of W1 (default 1e-3)")
    p.add_argument(
        "--lr-vocab", type=float, default=None, help="learning rate of LayerNorm + W2 (default 5e-5; 1e-3 for coco500)"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output directory for the head (and its checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> dict:
    from .data import load_pairs
    from .evaluation import dense_metrics, evaluate_head
    from .training import D2STrainer, TrainConfig

    started = time.perf_counter()
    data = load_pairs(args.data)
    defaults = DATASET_DEFAULTS.get(str(args.data), {})
    settings = {
        key: getattr(args, key) if getattr(args, key) is not None else defaults[key]
        for key in ("epochs", "batch_size", "lr_proj", "lr_vocab")
        if getattr(args, key) is not None or key in defaults
    }
    config = TrainConfig(exp=args.exp, eta=args.eta, lam=args.lam, tau=args.tau, seed=args.seed, **settings)
    trainer = D2STrainer(config, checkpoint_dir=args.out, device=args.device, progress=not args.quiet)
    result = trainer.fit(data, dense_encoder=data.meta.get("dense_encoder"))
    result.head.save_pretrained(args.out)
    test = data.evaluation_split()
    sparse = evaluate_head(result.head, test)
    dense = dense_metrics(test)
    report = {
        "data": str(args.data),
        "exp": args.exp,
        "eta": args.eta,
        "dense_r1": dense["R@1"],
        "sparse_r1": sparse["R@1"],
        "sparse_r5": sparse["R@5"],
        "sparse_r10": sparse["R@10"],
        "sparse_mrr10": sparse["RR@10"],
        "flops": sparse["flops"],
        "exact20": sparse["exact20"],
        "semantic20": sparse["semantic20"],
        "q_nnz": sparse["q_nnz"],
        "d_nnz": sparse["d_nnz"],
        "epochs": config.epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - started, 1),
        "out": str(args.out),
    }
    (result.head.config.extra or {}).update({"test": report})
    result.head.save_pretrained(args.out)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="d2s", description="Dense2Sparse multimodal learned sparse retrieval"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        if args.command == "train":
            report = cmd_train(args)
            print(json.dumps(report))
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"d2s {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
