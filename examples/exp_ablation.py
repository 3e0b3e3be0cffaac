"""The paper's expansion-control ablation (Table 2) and semantic deviation (Table 3) on one data set.

Trains one head per expansion mode (0, 1, c, c+w) and sparsity weight η, then prints a table of sparse R@1,
R@5, MRR@10, FLOPs, Exact@20 and Semantic@20 next to the paper's numbers for one data set × dense model
(``--paper``, default MSCOCO with BLIP). Each head goes through ``d2s train`` (run in this process), so interrupted runs resume.

    python examples/exp_ablation.py --demo                                  # embedded COCO-500 set, CPU
    python examples/exp_ablation.py --demo --epochs 2 --modes 0 c+w --etas 1e-3   # a smoke test, ~1 min
    python examples/exp_ablation.py --data vectors/mscoco-blip-dense        # the paper's setting, on a GPU
    python examples/exp_ablation.py --data vectors/flickr30k-albef-dense --paper flickr30k-albef

Prints the table, then the rows as one JSON list on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import paper_numbers as paper
from steps import StepError, d2s


def train(data: str, exp: str, eta: float, out: Path, epochs: int | None) -> dict:
    """``d2s train`` for one head; its JSON report plus the wall time."""
    argv = ["train", "--data", data, "--exp", exp, "--eta", repr(eta), "--out", str(out), "--quiet"]
    if epochs:
        argv += ["--epochs", str(epochs)]
    started = time.perf_counter()
    report, _ = d2s(*argv)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    paper.add_data_arguments(ap)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--modes", nargs="+", choices=["0", "1", "c", "c+w"], default=["0", "1", "c", "c+w"])
    ap.add_argument("--etas", nargs="+", type=float, default=[1e-3, 1e-5])
    ap.add_argument("--epochs", type=int, default=None, help="default: d2s train's (200; 40 for coco500)")
    args = ap.parse_args()
    data, ref = paper.data_and_reference(ap, args)

    rows = []
    for eta in args.etas:
        for exp in args.modes:
            try:
                report = train(data, exp, eta, Path(args.out) / f"exp{exp}-eta{eta:g}", args.epochs)
            except StepError as e:
                raise SystemExit(str(e)) from None
            report["paper"] = paper.expected(*ref, exp, eta)  # Tables 2-3
            rows.append(report)
            print(f"trained exp={exp} eta={eta:g} in {report['wall_seconds']} s", file=sys.stderr, flush=True)

    print(
        f"paper columns: {args.paper} (Table 2: R@1 / R@5 / MRR@10 / FLOPs; Table 3: Exact@20 / Semantic@20)"
    )
    print(
        "| exp | η | dense R@1 | sparse R@1 | R@5 | MRR@10 | FLOPs | Exact@20 | Semantic@20 "
        "| paper T2 | paper T3 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['exp']} | {r['eta']:g} | {100 * r['dense_r1']:.1f} | {100 * r['sparse_r1']:.1f} | "
            f"{100 * r['sparse_r5']:.1f} | {100 * r['sparse_mrr10']:.1f} | {r['flops']:.1f} | "
            f"{100 * r['exact20']:.1f} | {100 * r['semantic20']:.1f} | "
            f"{paper.fmt(paper.SPARSE.get((*ref, r['exp'], r['eta'])))} | "
            f"{paper.fmt(paper.SEMANTIC.get((*ref, r['exp'], r['eta'])))} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
