"""The quickstart notebook: valid nbformat 4 without stored outputs, and its code cells run in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "d2s_quickstart.ipynb"


# Executes the notebook's code cells in order in one namespace, as Jupyter would; the value of a cell's last
# expression is kept (like Out[n]). Prints a JSON summary of what the test checks.
NOTEBOOK_RUNNER = r"""
import ast, json, sys
import pandas as pd

nb = json.load(open(sys.argv[1], encoding="utf-8"))
ns = {"__name__": "__main__"}
outs = []
for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
    tree = ast.parse("".join(cell["source"]))
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, f"<cell {n}>", "exec"), ns)
    outs.append(eval(compile(ast.Expression(last.value), f"<cell {n}>", "eval"), ns) if last else None)
experiment = next(o for o in outs if isinstance(o, pd.DataFrame) and "R@1" in o.columns)
print(json.dumps({
    "epochs": ns["EPOCHS"],
    "best_epoch": ns["result"].best_epoch,
    "indexed": len(ns["index"]),
    "experiment": json.loads(experiment.to_json(orient="records")),
    "compare": json.loads(ns["table"].to_json(orient="records")),
}))
"""


def test_notebook_is_nbformat4_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids)
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert set(kinds) == {"markdown", "code"} and kinds[0] == "markdown"
    for cell in nb["cells"]:
        assert isinstance(cell["source"], list) and cell["metadata"] == {}
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", NOTEBOOK_RUNNER, str(NOTEBOOK)],
        cwd=tmp_path,
        env={
            **os.environ,
            # this checkout first, so that the notebook imports the code under test
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH")) if p
            ),
            "D2S_QUICKSTART_EPOCHS": "2",
            "D2S_QUICKSTART_DIR": str(tmp_path / "work"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["epochs"] == 2 and 1 <= out["best_epoch"] <= 2
    assert out["indexed"] == 50  # coco500's test images
    assert (tmp_path / "work" / "head" / "config.json").is_file()
    experiment = {r["name"]: r for r in out["experiment"]}
    assert list(experiment) == ["dense", "d2s expanded", "d2s own terms", "own terms >> expansion"]
    assert experiment["dense"]["R@1"] == pytest.approx(0.86, abs=1e-3)  # dense over those 50 (data README)
    assert all(0.0 <= r["R@1"] <= r["R@5"] <= 1.0 for r in experiment.values())
    compared = {r["name"]: r for r in out["compare"]}
    assert compared["dense"]["flops"] is None and compared["dense"]["overlap@10"] == 1.0
    assert compared["d2s expanded"]["flops"] >= compared["d2s own terms"]["flops"] > 0
    for name in experiment:  # the timed run of compare() gives the same effectiveness as pt.Experiment
        assert compared[name]["R@1"] == pytest.approx(experiment[name]["R@1"])
    # the top-terms cell: three captions, each with a caption line and an image line of ten terms
    caption_lines = [line for line in proc.stdout.splitlines() if line.startswith("  caption: ")]
    assert len(caption_lines) == 3 and all(len(line.split()) == 11 for line in caption_lines)
