"""benchmarks/latency.py --small runs and reports every engine with the agreed JSON keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
KEYS = {
    "engine",
    "setting",
    "flops",
    "k",
    "expanded",
    "ms_per_query",
    "p99_ms",
    "qps",
    "recall",
    "build_s",
    "index_mb",
}


@pytest.mark.slow
def test_latency_benchmark_small_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "latency.py"),
            "--small",
            "--docs",  # the suite checks the rows, not the speed: a smaller --small
            "2000",
            "--queries",
            "20",
            "--json",
            "--workdir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(rows, list) and rows
    for row in rows:
        assert KEYS <= set(row), sorted(KEYS - set(row))
    e2e = [r for r in rows if r["engine"] == "e2e+encode"]
    measured = [r for r in rows if r["engine"] not in ("paper", "e2e+encode")]
    _check_e2e_encode_rows(e2e)
    assert {r["k"] for r in measured} == {10, 100, 1000}
    assert len({r["flops"] for r in measured}) == 2
    engines = {r["engine"] for r in measured}
    assert {"taat", "exact", "pisa", "adaptive"} <= engines
    for r in measured:
        assert r["ms_per_query"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 and r["qps"] > 0
        if r["engine"] in ("taat", "exact") and r["expanded"]:
            assert r["recall"] == 1.0, r
        if r["engine"] == "adaptive" and r["setting"].startswith("certified"):
            assert r["recall"] == 1.0, r
        assert 0.0 <= r["recall"] <= 1.0
    assert any(r["engine"] == "paper" and r["ms_per_query"] == 156.0 for r in rows)


def _check_e2e_encode_rows(rows: list[dict]) -> None:
    """Query vector in, result frame out: every system at both sparsities, side by side."""
    assert len({r["collection"] for r in rows}) == 2 and {r["k"] for r in rows} == {10}
    for collection in {r["collection"] for r in rows}:
        group = [r for r in rows if r["collection"] == collection]
        names = [r["setting"] for r in group]
        assert any("int8-screened" in n for n in names) and any("rescore" in n for n in names)
        assert any(n.startswith("dense exact") for n in names) and any(
            n.startswith("dense HNSW") for n in names
        )
        for r in group:
            assert r["e2e_encode_ms_per_query"] > 0 and r["e2e_encode_p99_ms"] >= r["p50_ms"] > 0
            assert r["e2e_encode_batch_ms_per_query"] > 0 and r["n_queries"] >= 1
            if r["setting"].startswith(("d2s expanded", "dense exact")):
                assert r["recall"] == 1.0, r  # exact encodings and exact engines
        hnsw = next(r for r in group if r["setting"].startswith("dense HNSW"))
        assert hnsw["ratio_to_hnsw"] == 1.0
