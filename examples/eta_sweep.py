"""Effectiveness vs efficiency across sparsity weights η (paper Fig. 2a and Table 1).

Trains one ``c+w`` head per η with ``d2s train``, prints sparse R@1 / R@5 / MRR@10 / FLOPs next to the paper's
BLIP numbers on MSCOCO, and draws Fig. 2a with ``d2s plot tradeoff``.

    python examples/eta_sweep.py --demo                                # embedded COCO-500 set, CPU, minutes
    python examples/eta_sweep.py --data vectors/mscoco-blip --out runs/coco-blip   # the paper's setting (GPU)

Interrupted runs resume (each head is a ``d2s train`` output directory with its checkpoint).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# Paper, Table 1 and Sec. 5.2 (MSCOCO 5k, D2S BLIP, exp = c+w): η -> (R@1, R@5, MRR@10, FLOPs); None: not given
PAPER_BLIP_COCO = {
    1e-2: (47.2, None, 58.5, 1.6),
    1e-3: (51.8, 79.3, 63.4, 11.5),
    1e-5: (54.5, 80.6, 65.6, 78.4),
}


def d2s(*argv: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "pyterrier_d2s.cli", *argv], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--demo", action="store_true", help="run on the embedded COCO-500 set")
    ap.add_argument("--out", default="runs/eta-sweep")
    ap.add_argument("--etas", nargs="+", type=float, default=[1e-2, 1e-3, 1e-4, 1e-5])
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    data = args.data or ("coco500" if args.demo else None)
    if data is None:
        ap.error("give --data or --demo")

    runs = []
    for eta in args.etas:
        out = Path(args.out) / f"eta{eta:g}"
        extra = ["--epochs", str(args.epochs)] if args.epochs else []
        report = d2s(
            "train", "--data", data, "--exp", "c+w", "--eta", str(eta), "--out", str(out), "--quiet", *extra
        )
        runs.append(report)
        print(
            f"η={eta:g}: R@1 {report['sparse_r1']:.3f}, FLOPs {report['flops']:.1f}",
            file=sys.stderr,
            flush=True,
        )

    print("| η | sparse R@1 | R@5 | MRR@10 | FLOPs | paper (BLIP, MSCOCO) R@1 / R@5 / MRR@10 / FLOPs |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        paper = PAPER_BLIP_COCO.get(r["eta"], (None,) * 4)
        paper_s = " / ".join("–" if v is None else f"{v:g}" for v in paper)
        print(
            f"| {r['eta']:g} | {r['sparse_r1']:.3f} | {r['sparse_r5']:.3f} | {r['sparse_mrr10']:.3f} | "
            f"{r['flops']:.1f} | {paper_s} |"
        )
    print(f"dense R@1: {runs[0]['dense_r1']:.3f} (paper, BLIP on MSCOCO 5k: 57.3)")
    figure = Path(args.out) / "tradeoff.png"
    try:
        d2s("plot", "tradeoff", *[r["out"] for r in runs], "--out", str(figure))
        print(f"Fig. 2a: {figure}")
    except subprocess.CalledProcessError as e:  # matplotlib missing: the table still stands
        print(f"no figure: {e.stderr.strip().splitlines()[-1]}", file=sys.stderr)
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
