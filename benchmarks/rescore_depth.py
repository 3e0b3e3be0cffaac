"""Candidate depth of "no expansion >> expansion": effectiveness, agreement with the expanded run, ms/query.

Runs on the directory ``d2s demo`` writes (``head``/``index``: the expanded c+w head and its index;
``head-noexp``/``index-noexp``: the exp=0 head whose index gives the candidates, the paper's Table 6
pairing) or on any four such paths, over the captions of a data set (``--data``, default the embedded
``coco500``; the test captions of the head's split.json or of the data's own split). For each depth c: the exp=0 head's own-term query retrieves c candidates, the expanded head
re-scores them exactly (``model.rescorer(index)``); reported are R@1, R@5, RR@10, ``overlap10_expanded`` (the
share of the expanded run's top 10 that the re-scored top 10 holds: it can only grow with c) and ms/query
(best of ``--repeats`` batch calls over all captions, query encoding included), next to the expanded run.

Usage::

    d2s demo --out runs/demo && python benchmarks/rescore_depth.py --demo-dir runs/demo [--depths 10 50 100]

Prints a line per depth and, as the last line, a JSON list (one object per depth, ``depth: "expanded"`` first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyterrier as pt
from ir_measures import RR, R

from pyterrier_d2s.data import load_pairs, split_for_head
from pyterrier_d2s.experiment import timed_run
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.measures import overlap_at_k
from pyterrier_d2s.model import D2S

MEASURES = [R @ 1, R @ 5, RR @ 10]


def measure(pipeline, topics, qrels, repeats: int) -> tuple[dict, object]:
    best, results = None, None
    for _ in range(repeats):
        results, ms = timed_run(pipeline, topics)
        best = ms if best is None else min(best, ms)
    values = pt.Evaluate(results, qrels, metrics=MEASURES)
    return {"ms_per_query": round(best, 4), **{str(m): round(values[str(m)], 4) for m in MEASURES}}, results


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", type=Path, default=Path("runs/demo"), help="what `d2s demo --out` wrote")
    ap.add_argument("--model", type=Path, help="expanded head (default: DEMO_DIR/head)")
    ap.add_argument("--index", type=Path, help="its index (default: DEMO_DIR/index)")
    ap.add_argument("--noexp-model", type=Path, help="exp=0 head (default: DEMO_DIR/head-noexp)")
    ap.add_argument("--noexp-index", type=Path, help="its index (default: DEMO_DIR/index-noexp)")
    ap.add_argument("--data", default="coco500")
    ap.add_argument("--depths", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500])
    ap.add_argument(
        "--num-results", type=int, default=100, help="k of the expanded run (d2s evaluate's default)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    paths = {
        "model": args.model or args.demo_dir / "head",
        "index": args.index or args.demo_dir / "index",
        "noexp_model": args.noexp_model or args.demo_dir / "head-noexp",
        "noexp_index": args.noexp_index or args.demo_dir / "index-noexp",
    }
    missing = [f"{name}={path}" for name, path in paths.items() if not path.exists()]
    if missing:
        sys.exit(f"rescore_depth: not found: {', '.join(missing)} (run `d2s demo` first or give the paths)")
    model, noexp_model = D2S.from_pretrained(paths["model"]), D2S.from_pretrained(paths["noexp_model"])
    index, noexp_index = D2SIndex(paths["index"]), D2SIndex(paths["noexp_index"])
    # the head's held-out images (its split.json), which its index holds
    data = split_for_head(load_pairs(args.data), paths["model"]).evaluation_split()
    topics, qrels = data.topics(), data.qrels()

    expanded = model.query_encoder(expansion=True) >> index.retriever(num_results=args.num_results)
    row, expanded_run = measure(expanded, topics, qrels, args.repeats)
    rows = [{"depth": "expanded", **row}]
    print(json.dumps(rows[-1]), file=sys.stderr)
    own_terms, rescorer = noexp_model.query_encoder(expansion=False), model.rescorer(index)
    for depth in args.depths:
        pipeline = own_terms >> noexp_index.retriever(num_results=depth) >> rescorer
        row, run = measure(pipeline, topics, qrels, args.repeats)
        row["overlap10_expanded"] = round(float(overlap_at_k(run, expanded_run, 10).mean()), 4)
        rows.append({"depth": depth, **row})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
