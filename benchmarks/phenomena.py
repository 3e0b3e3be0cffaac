"""Planted-vocabulary benchmark: where the truth is known (JSON out).

Each image is a bag of ``concepts`` real WordPiece words (Zipf-popular among ``--concepts`` of them); each of
its captions names a random 3 of them in a short sentence with function words ("a dog and a tree on the
beach"). Dense vectors are generated from the bags of words: a fixed random map sends each concept to a
d-dimensional direction, an image is the normalised sum of its concepts' directions plus noise, a caption the
sum of the concepts it names plus a shared modality offset (CLIP-like gap) plus noise. A head trained with
the default recipe on a seeded 80/10/10 split is evaluated on the test images: R@1 against the generator's own
dense vectors, FLOPs, Exact@20 and the *recovery* of the planted terms — the share of a test image's planted
concepts among its top-``concepts`` output terms, which a perfectly interpretable head gets to 1.

    python benchmarks/phenomena.py --images 500 2000 --out benchmarks/results/phenomena_cpu.json
    python benchmarks/phenomena.py --images 500 5000 113000 --device cuda   # the paper's scale, on a GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from pyterrier_d2s.data import PairedVectors
from pyterrier_d2s.data.split import assign_split
from pyterrier_d2s.data.synthetic import planted_pairs
from pyterrier_d2s.evaluation import dense_metrics, evaluate_head
from pyterrier_d2s.training import D2STrainer, TrainConfig
from pyterrier_d2s.vocab import Vocabulary


def recovery(head, data: PairedVectors, planted: list[list[str]]) -> float:
    """Mean share of each image's planted concepts among its top-len(concepts) output terms."""
    s = head.encode(data.image_vectors)
    total = 0.0
    for row, image_id in enumerate(data.image_ids):
        truth = planted[int(image_id)]
        r = s[row]
        top = r.indices[np.argsort(-r.data, kind="stable")[: len(truth)]]
        total += len(set(head.vocab.decode(top)) & set(truth)) / len(truth)
    return total / max(1, len(data.image_ids))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--captions-per-image", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["c+w", "1", "0"], choices=["c+w", "c", "1", "0"])
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe (tests only)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    vocab = Vocabulary()
    runs = []
    for n in args.images:
        data, planted = planted_pairs(vocab, n, args.captions_per_image, seed=args.seed)
        split = assign_split(data, seed=args.seed)
        test = split.evaluation_split()
        dense = dense_metrics(test)["R@1"]
        for mode in args.modes:
            config = TrainConfig(exp=mode, **({} if args.epochs is None else {"epochs": args.epochs}))
            started = time.perf_counter()
            result = D2STrainer(config, vocab=vocab, device=args.device, progress=False).fit(split)
            seconds = time.perf_counter() - started
            m = evaluate_head(result.head, test)
            record = {
                "images": n,
                "captions": len(data),
                "exp": mode,
                "dense_r1": dense,
                "r1": m["R@1"],
                "flops": m["flops"],
                "exact20": m["exact20"],
                "recovery": recovery(result.head, test, planted),
                "recipe": result.config.recipe_values(),
                "seconds": seconds,
            }
            runs.append(record)
            print(
                f"{n} images exp={mode}: dense {dense:.3f}  R@1 {m['R@1']:.3f}  FLOPs {m['flops']:.1f}  "
                f"Exact@20 {m['exact20']:.3f}  recovery {record['recovery']:.3f}  {seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    report = {"runs": runs}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
