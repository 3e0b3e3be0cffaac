"""Every file of a built index, damaged in turn (cut in half, emptied, bytes flipped, lines swapped): each case
ends in a clear Python error or in the intact index's results — never a native crash, never a wrong ranking.

The cases run in a child process (tests/_corruption_driver.py) so that a crash is seen, not suffered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pyterrier_d2s.index import D2SIndex

sys.path.insert(0, str(Path(__file__).parent))

HERE = Path(__file__).parent
KINDS = ("truncate", "empty", "flip")


def _collection(n_docs=300, n_terms=120, seed=0):
    rng = np.random.default_rng(seed)
    m = sp.random(n_docs, n_terms, density=0.08, random_state=rng, dtype=np.float32, format="csr")
    m.data = (m.data * 3 + 0.05).astype(np.float32)
    terms = [f"t{i}" for i in range(n_terms)]
    docnos = [f"d{i}" for i in range(n_docs)]
    queries = pd.DataFrame(
        {
            "qid": [f"q{i}" for i in range(6)],
            "query_toks": [
                {f"t{j}": float(rng.uniform(0.1, 2)) for j in rng.choice(n_terms, 6)} for _ in range(6)
            ],
        }
    )
    return m, terms, docnos, queries


def run_cases(spec_path: Path, n_cases: int) -> dict[int, str]:
    outcomes: dict[int, str] = {}
    first = 0
    while first < n_cases:
        proc = subprocess.run(
            [sys.executable, str(HERE / "_corruption_driver.py"), str(spec_path), str(first)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=HERE.parent,
        )
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                started = int(line.split()[1])
            elif line.startswith("RESULT "):
                _, i, outcome = line.split(" ", 2)
                outcomes[int(i)] = outcome
        if proc.returncode == 0:
            break
        assert started is not None, proc.stderr[-2000:]
        outcomes[started] = f"CRASH rc={proc.returncode}"
        first = started + 1
    return outcomes


@pytest.mark.slow
def test_damaged_index_files_never_crash_nor_mislead(tmp_path):
    m, terms, docnos, queries = _collection()
    intact = tmp_path / "intact.d2s"
    index = D2SIndex(intact, verbose=False).index_matrix(docnos, m, terms)
    reference = {}
    for engine in ("taat", "pisa"):  # builds the taat engine files too, so that they are damaged as well
        res = index.retriever(engine=engine, num_results=5)(queries)
        reference[engine] = [[r.qid, r.docno, round(float(r.score), 3)] for r in res.itertuples()]
    files = sorted(str(p.relative_to(intact)) for p in intact.rglob("*") if p.is_file())
    assert "docnos.txt" in files and any(f.startswith("engines/taat") for f in files)
    cases = [(f, k) for f in files for k in KINDS] + [
        ("docnos.txt", "swap-lines"),
        ("terms.txt", "swap-lines"),
    ]
    spec = {
        "intact": str(intact),
        "workdir": str(tmp_path / "work"),
        "queries": queries.to_dict(orient="list"),
        "reference": reference,
        "cases": cases,
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    outcomes = run_cases(spec_path, len(cases))
    table = "\n".join(f"{f:45s} {k:10s} {outcomes.get(i, 'MISSING')}" for i, (f, k) in enumerate(cases))
    print(table)
    bad = [(cases[i], o) for i, o in outcomes.items() if o.startswith(("CRASH", "WRONG"))]
    assert len(outcomes) == len(cases) and not bad, table


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt"])
@pytest.mark.parametrize("kind", ["truncate", "empty", "flip"])
def test_damaged_head_files_are_refused(tmp_path, vocab, name, kind):
    """The same damage to each file of a saved head: always a clear error (in-process: no native code)."""
    import torch
    from _corruption_driver import damage

    from pyterrier_d2s.head import D2SHead, D2SHeadConfig

    head = D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=16, init="random"), vocab=vocab)
    head.save_pretrained(tmp_path / "h")
    damage(tmp_path / "h" / name, kind)
    with pytest.raises((ValueError, FileNotFoundError)):
        loaded = D2SHead.from_pretrained(tmp_path / "h")
        torch.testing.assert_close(loaded(torch.ones(1, 8)), head(torch.ones(1, 8)))  # a "load" must be exact
