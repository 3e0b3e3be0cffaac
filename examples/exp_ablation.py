"""The paper's expansion-control ablation (Table 2) and semantic deviation (Table 3) on one data set.

Trains one head per expansion mode (0, 1, c, c+w) and sparsity weight η, then prints a table of sparse R@1,
FLOPs, Exact@20 and Semantic@20 next to the paper's MSCOCO numbers (BLIP). Each head goes through
``d2s train``, so interrupted runs resume.

    python examples/exp_ablation.py --demo                       # embedded COCO-500 set, CPU
    python examples/exp_ablation.py --data vectors/mscoco-blip   # the paper's setting, on a GPU

Prints the table, then the rows as one JSON list on the last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# Paper, Table 2 (MSCOCO 5k, BLIP): R@1, FLOPs; Table 3: Exact@20, Semantic@20 (exp = c and 1 only)
PAPER = {
    ("0", 1e-3): (45.5, 2.8, None, None),
    ("1", 1e-3): (53.4, 49.1, 2.5, 42.0),
    ("c", 1e-3): (51.9, 11.8, 25.0, 63.2),
    ("c+w", 1e-3): (51.8, 11.5, None, None),
    ("0", 1e-5): (47.2, 3.2, None, None),
    ("1", 1e-5): (55.9, 343.0, 6.9, 48.5),
    ("c", 1e-5): (54.7, 79.1, 20.0, 60.1),
    ("c+w", 1e-5): (54.5, 78.4, None, None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", default=None, help="vectors directory or authors' dir (default with --demo: coco500)"
    )
    ap.add_argument("--demo", action="store_true", help="run on the embedded COCO-500 set")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--modes", nargs="+", default=["0", "1", "c", "c+w"])
    ap.add_argument("--etas", nargs="+", type=float, default=[1e-3, 1e-5])
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    data = args.data or ("coco500" if args.demo else None)
    if data is None:
        ap.error("give --data or --demo")

    rows = []
    for eta in args.etas:
        for exp in args.modes:
            out = Path(args.out) / f"exp{exp}-eta{eta:g}"
            cmd = [
                sys.executable,
                "-m",
                "pyterrier_d2s.cli",
                "train",
                "--data",
                data,
                "--exp",
                exp,
                "--eta",
                str(eta),
                "--out",
                str(out),
                "--quiet",
            ]
            if args.epochs:
                cmd += ["--epochs", str(args.epochs)]
            started = time.perf_counter()
            result = subprocess.run(cmd, check=True, capture_output=True, text=True)
            report = json.loads(result.stdout.strip().splitlines()[-1])
            report["wall_seconds"] = round(time.perf_counter() - started, 1)
            rows.append(report)
            print(f"trained exp={exp} eta={eta:g} in {report['wall_seconds']} s", file=sys.stderr, flush=True)

    print(
        "| exp | η | dense R@1 | sparse R@1 | R@5 | MRR@10 | FLOPs | Exact@20 | Semantic@20 | paper R@1 / FLOPs / Exact@20 / Sem@20 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        paper = PAPER.get((r["exp"], r["eta"]), (None,) * 4)
        paper_s = " / ".join("–" if v is None else f"{v:g}" for v in paper)
        print(
            f"| {r['exp']} | {r['eta']:g} | {r['dense_r1']:.3f} | {r['sparse_r1']:.3f} | {r['sparse_r5']:.3f} | "
            f"{r['sparse_mrr10']:.3f} | {r['flops']:.1f} | {100 * r['exact20']:.1f} | {100 * r['semantic20']:.1f} | "
            f"{paper_s} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
