"""Runs damage cases against copies of a built index, one after another, in this process.

Usage: python _corruption_driver.py CASES.json FIRST. Prints ``START i`` before case i and ``RESULT i OUTCOME``
after it; a native crash ends the process between the two, which the calling test records.
"""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from pyterrier_d2s.index import D2SIndex


def damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "flip":  # same size, bytes in the middle inverted
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 16]) + data[mid + 16 :])
    elif kind == "swap-lines":
        lines = data.decode().splitlines(keepends=True)
        lines[0], lines[1] = lines[1], lines[0]
        path.write_bytes("".join(lines).encode())
    else:
        raise ValueError(kind)


def search(index_dir: Path, queries: pd.DataFrame) -> dict:
    index = D2SIndex(index_dir)
    out = {}
    for engine in ("taat", "pisa"):
        res = index.retriever(engine=engine, num_results=5)(queries)
        out[engine] = [[r.qid, r.docno, round(float(r.score), 3)] for r in res.itertuples()]
    return out


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    first = int(sys.argv[2])
    queries = pd.DataFrame(spec["queries"])
    reference = spec["reference"]
    for i, (name, kind) in enumerate(spec["cases"]):
        if i < first:
            continue
        print(f"START {i}", flush=True)
        work = Path(spec["workdir"]) / f"case{i}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(spec["intact"], work)
        damage(work / name, kind)
        try:
            got = search(work, queries)
            outcome = "correct" if got == reference else "WRONG"
        except Exception as e:  # noqa: BLE001 - any clean Python error is an acceptable outcome here
            message = str(e).splitlines()[0] if str(e) else ""
            outcome = f"error {type(e).__name__}: {message[:120]}"
        print(f"RESULT {i} {outcome}", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
