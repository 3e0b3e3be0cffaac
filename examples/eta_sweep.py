"""Effectiveness vs efficiency across sparsity weights η (paper Fig. 2a and Table 1).

Trains one ``c+w`` head per η with ``d2s train``, prints sparse R@1 / R@5 / MRR@10 / FLOPs next to the paper's
numbers for one data set × dense model (``--paper``, default BLIP on MSCOCO), and draws Fig. 2a with
``d2s plot tradeoff`` (needs matplotlib).

    python examples/eta_sweep.py --demo                                # embedded COCO-500 set, CPU, minutes
    python examples/eta_sweep.py --demo --epochs 2 --etas 1e-2 1e-3    # a smoke test, about a minute
    python examples/eta_sweep.py --data vectors/mscoco-blip-dense --out runs/coco-blip   # the paper's setting (GPU)

Interrupted runs resume (each head is a ``d2s train`` output directory with its checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import paper_numbers as paper
from steps import StepError, d2s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    paper.add_data_arguments(ap)
    ap.add_argument("--out", default="runs/eta-sweep")
    ap.add_argument("--etas", nargs="+", type=float, default=[1e-2, 1e-3, 1e-4, 1e-5])
    ap.add_argument("--epochs", type=int, default=None, help="default: d2s train's (200; 40 for coco500)")
    args = ap.parse_args()
    data, ref = paper.data_and_reference(ap, args)

    runs = []
    for eta in args.etas:
        out = Path(args.out) / f"eta{eta:g}"
        extra = ["--epochs", str(args.epochs)] if args.epochs else []
        argv = ["train", "--data", data, "--exp", "c+w", "--eta", repr(eta), "--out", str(out), "--quiet"]
        try:
            report, _ = d2s(*argv, *extra)
        except StepError as e:
            raise SystemExit(str(e)) from None
        report["paper"] = paper.expected(*ref, "c+w", eta)  # Table 1 (and Sec. 5.2 for η = 1e-2)
        runs.append(report)
        print(
            f"η={eta:g}: R@1 {report['sparse_r1']:.3f}, FLOPs {report['flops']:.1f}",
            file=sys.stderr,
            flush=True,
        )

    print(f"paper columns: {args.paper} (Table 1; η = 1e-2 from Sec. 5.2; measures in %)")
    print("| η | sparse R@1 | R@5 | MRR@10 | FLOPs | paper R@1 / R@5 / MRR@10 / FLOPs |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['eta']:g} | {100 * r['sparse_r1']:.1f} | {100 * r['sparse_r5']:.1f} | "
            f"{100 * r['sparse_mrr10']:.1f} | {r['flops']:.1f} | "
            f"{paper.fmt(paper.SPARSE.get((*ref, 'c+w', r['eta'])))} |"
        )
    print(
        f"dense R@1: {100 * runs[0]['dense_r1']:.1f} (paper, Table 1: {paper.DENSE[ref][0]:.1f} "
        f"for {paper.LABELS[ref[1]]} on {paper.LABELS[ref[0]]})"
    )
    figure = Path(args.out) / "tradeoff.png"
    try:
        d2s("plot", "tradeoff", *[r["out"] for r in runs], "--out", str(figure))
        print(f"Fig. 2a: {figure}")
    except StepError:  # matplotlib missing (the message is above): the table still stands
        print("no figure", file=sys.stderr)
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
