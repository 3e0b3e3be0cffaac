"""Held-out numbers of the default recipe on k seeded folds by image (JSON out).

For every expansion mode and fold f of k (``assign_split(fold=f, num_folds=k)``: fold f is the test set, a
seeded 1/8 of the rest validation), a head is trained with ``TrainConfig()``'s defaults — the same for every
fold and mode — and evaluated on the fold's test images, the dense model on the same images beside it.
Prints one line per run and, last, one JSON object with the per-run records and mean ± sd per mode, and the
issue's targets checked (c+w R@1 >= 0.85 dense, FLOPs <= 20, Exact@20 >= 0.15 and above exp=1's, exp=1 FLOPs
>= 2x c+w's, exp=0 the lowest FLOPs).

    python benchmarks/heldout_folds.py --data coco500 --folds 5 --out benchmarks/results/heldout_coco500.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.data.split import assign_split
from pyterrier_d2s.evaluation import dense_metrics, evaluate_head
from pyterrier_d2s.training import D2STrainer, TrainConfig

MODES = ("c+w", "c", "1", "0")
KEYS = ("dense_r1", "r1", "flops", "exact20", "semantic20", "seconds")


def run_fold(data, mode: str, fold: int, folds: int, seed: int, overrides: dict) -> dict:
    split = assign_split(data, seed=seed, fold=fold, num_folds=folds)
    started = time.perf_counter()
    result = D2STrainer(TrainConfig(exp=mode, **overrides), progress=False).fit(split)
    seconds = time.perf_counter() - started
    test = split.evaluation_split()
    sparse = evaluate_head(result.head, test)
    return {
        "exp": mode,
        "fold": fold,
        "test_images": len(test.image_ids),
        "dense_r1": dense_metrics(test)["R@1"],
        "r1": sparse["R@1"],
        "flops": sparse["flops"],
        "exact20": sparse["exact20"],
        "semantic20": sparse["semantic20"],
        "best_epoch": result.best_epoch,
        "recipe": result.config.recipe_values(),
        "seconds": seconds,
    }


def summarise(runs: list[dict]) -> dict:
    out = {}
    for mode in sorted({r["exp"] for r in runs}, key=MODES.index):
        rows = [r for r in runs if r["exp"] == mode]
        out[mode] = {
            k: {
                "mean": float(np.mean([r[k] for r in rows])),
                "sd": float(np.std([r[k] for r in rows], ddof=1)),
            }
            for k in KEYS
        }
    return out


def targets(summary: dict) -> dict:
    m = {mode: {k: v["mean"] for k, v in s.items()} for mode, s in summary.items()}
    checks = {}
    if "c+w" in m:
        cw = m["c+w"]
        checks["cw_r1_ge_0.85_dense"] = cw["r1"] >= 0.85 * cw["dense_r1"]
        checks["cw_flops_le_20"] = cw["flops"] <= 20
        checks["cw_exact20_ge_0.15"] = cw["exact20"] >= 0.15
        if "1" in m:
            checks["cw_exact20_above_exp1"] = cw["exact20"] > m["1"]["exact20"]
            checks["exp1_flops_ge_2x_cw"] = m["1"]["flops"] >= 2 * cw["flops"]
    if "0" in m:
        checks["exp0_lowest_flops"] = all(m["0"]["flops"] <= v["flops"] for v in m.values())
    return checks


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="coco500", help="packaged name or vectors directory")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", type=int, nargs="*", default=None, help="run these folds only")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    ap.add_argument("--seed", type=int, default=0, help="seed of the folds")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe (tests only)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field for every run, e.g. --set init=random --set eta=5e-3 (ablations)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_pairs(args.data)
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in TrainConfig.__dataclass_fields__:
            raise SystemExit(f"--set {item}: TrainConfig has no field {key!r}")
        overrides[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
    runs = []
    for mode in args.modes:
        for fold in args.only_folds if args.only_folds is not None else range(args.folds):
            record = run_fold(data, mode, fold, args.folds, args.seed, overrides)
            runs.append(record)
            print(
                f"exp={mode} fold={fold}: dense R@1 {record['dense_r1']:.3f}  R@1 {record['r1']:.3f}  "
                f"FLOPs {record['flops']:.1f}  Exact@20 {record['exact20']:.3f}  "
                f"Semantic@20 {record['semantic20']:.3f}  {record['seconds']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    summary = summarise(runs) if len(runs) > 1 else {}
    report = {
        "data": str(args.data),
        "folds": args.folds,
        "torch_threads": torch.get_num_threads(),
        "overrides": overrides,
        "summary": summary,
        "targets": targets(summary) if summary else {},
        "runs": runs,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
