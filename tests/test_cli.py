"""The d2s subcommands that work on a trained head: index, evaluate, search, explain, plot."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyterrier_d2s.cli import SYSTEM_NAMES, main
from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.head import D2SHead, D2SHeadConfig


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory, vocab):
    torch.manual_seed(0)
    head = D2SHead(D2SHeadConfig(input_dim=512, hidden_dim=384), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(-1.5)
    path = tmp_path_factory.mktemp("head") / "h"
    head.save_pretrained(path)
    return path


def run(capsys, *argv):
    out, _, report = run_with_err(capsys, *argv)
    return out, report


def run_with_err(capsys, *argv):
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err, json.loads(captured.out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, head_dir):
    path = tmp_path_factory.mktemp("index") / "i"
    assert main(["index", "--model", str(head_dir), "--data", "coco500", "--out", str(path)]) == 0
    return path


def test_index_report(index_dir, head_dir, capsys):
    meta = json.loads((index_dir / "pt_meta.json").read_text())
    assert meta["type"] == "sparse_index" and meta["num_docs"] == 500
    assert meta["doc_mass_lost"] < 0.005
    # a second index run into the same directory is refused without --overwrite
    assert main(["index", "--model", str(head_dir), "--data", "coco500", "--out", str(index_dir)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_evaluate_prints_table_and_json(index_dir, head_dir, capsys):
    out, err, rows = run_with_err(
        capsys, "evaluate", "--model", head_dir, "--index", index_dir, "--data", "coco500"
    )
    assert "--noexp-model/--noexp-index" in err  # an expanded head's own terms as first stage: say so
    assert [r["name"] for r in rows] == list(SYSTEM_NAMES)
    for r in rows:
        assert {"R@1", "R@5", "RR@10", "flops", "ms_per_query"} <= set(r)
    dense = rows[0]
    assert dense["R@1"] == pytest.approx(0.506, abs=1e-3) and dense["flops"] is None
    assert rows[1]["flops"] > rows[2]["flops"] > 0  # expanded queries co-activate more than own terms
    assert "d2s-noexp>>rescore" in out and "overlap@10" in out


def test_search_by_caption_id(index_dir, head_dir, capsys):
    data = load_pairs("coco500")
    qid = data.caption_ids[7]
    out, hits = run(
        capsys,
        "search",
        "--model",
        head_dir,
        "--index",
        index_dir,
        "--data",
        "coco500",
        "--qid",
        qid,
        "-k",
        "5",
    )
    assert len(hits) == 5 and [h["rank"] for h in hits] == list(range(5))
    assert data.caption_texts[7] in out
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert main(["search", "--model", str(head_dir), "--index", str(index_dir), "a dog"]) == 2
    assert "no dense encoder" in capsys.readouterr().err


def test_explain_marks_caption_terms(head_dir, capsys):
    data = load_pairs("coco500")
    out, report = run(
        capsys, "explain", "--model", head_dir, "--data", "coco500", "--id", data.caption_ids[0], "-k", "15"
    )
    (item,) = report["items"]
    assert item["caption"] == data.caption_texts[0] and len(item["caption_terms"]) == 15
    for term in item["caption_terms"]:
        assert (term + "*" in out) == (term in item["own_terms"])
    assert main(["explain", "--model", str(head_dir), "--data", "coco500", "--id", "nope"]) == 2


def test_plots_write_pngs(index_dir, head_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    cfg = json.loads((head_dir / "config.json").read_text())
    runs = []
    for n, (r1, flops) in enumerate([(0.3, 5.0), (0.4, 20.0)]):
        d = tmp_path / f"run{n}"
        d.mkdir()
        report = {"exp": "c+w", "eta": 10.0 ** -(n + 3), "sparse_r1": r1, "flops": flops, "dense_r1": 0.5}
        (d / "config.json").write_text(json.dumps({**cfg, "extra": {"test": report}}))
        runs.append(d)
    _, rep = run(capsys, "plot", "tradeoff", *runs, "--out", tmp_path / "a.png")
    assert rep["points"] == [[5.0, 0.3], [20.0, 0.4]]
    _, rep = run(
        capsys,
        "plot",
        "overlap",
        "--model",
        head_dir,
        "--index",
        index_dir,
        "--data",
        "coco500",
        "--out",
        tmp_path / "b.png",
    )
    assert 0.0 <= rep["mean_overlap@10"] <= 1.0 and rep["queries"] == 500
    for name in ("a.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(rep["mean_overlap@10"])


@pytest.fixture(scope="module")
def noexp_dirs(tmp_path_factory, vocab):
    """A second head (standing in for one trained with --exp 0) and its index over the same images."""
    torch.manual_seed(1)
    head = D2SHead(D2SHeadConfig(input_dim=512, hidden_dim=384, exp="0"), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(-1.0)
    root = tmp_path_factory.mktemp("noexp")
    head.save_pretrained(root / "h")
    assert main(["index", "--model", str(root / "h"), "--data", "coco500", "--out", str(root / "i")]) == 0
    return root / "h", root / "i"


def test_evaluate_with_an_exp0_first_stage(index_dir, head_dir, noexp_dirs, capsys):
    noexp_head, noexp_index = noexp_dirs
    _, err, alone = run_with_err(
        capsys, "evaluate", "--model", noexp_head, "--index", noexp_index, "--data", "coco500"
    )
    assert "note:" not in err  # an exp=0 head's own terms are the paper's first stage
    _, err, paired = run_with_err(
        capsys,
        *("evaluate", "--model", head_dir, "--index", index_dir, "--data", "coco500"),
        *("--noexp-model", noexp_head, "--noexp-index", noexp_index, "--candidates", "500"),
    )
    assert "note:" not in err
    by_name = {r["name"]: r for r in paired}
    solo = {r["name"]: r for r in alone}
    # the no-expansion run is the exp=0 model's own, with its FLOPs against its own index
    for key in ("R@1", "R@5", "RR@10", "flops"):
        assert by_name["d2s-noexp"][key] == pytest.approx(solo["d2s-noexp"][key])
    # the rescorer's first stage is the exp=0 model's run too (its FLOPs are those of that model's queries)
    assert by_name["d2s-noexp>>rescore"]["flops"] == pytest.approx(solo["d2s-noexp"]["flops"])
    args = ["evaluate", "--model", head_dir, "--index", index_dir, "--data", "coco500"]
    assert main([str(a) for a in [*args, "--noexp-model", noexp_head]]) == 2
    assert "--noexp-index" in capsys.readouterr().err


def test_demo_runs_every_stage(tmp_path, capsys):
    # one epoch: the stages' wiring (train → index → evaluate → terms), not the demo's numbers
    _, report = run(capsys, "demo", "--epochs", "1", "--noexp-epochs", "1", "--out", tmp_path / "demo")
    assert report["train"]["epochs"] == 1 and report["index"]["documents"] == 500
    # the rescorer's first stage is an exp=0 head's index (the paper's Table 6 pairing)
    assert report["train_noexp"]["exp"] == "0" and report["train_noexp"]["epochs"] == 1
    assert report["index_noexp"]["documents"] == 500
    noexp = {r["name"]: r for r in report["evaluate"]}["d2s-noexp"]
    assert noexp["flops"] == pytest.approx(report["train_noexp"]["flops"], rel=1e-6)
    assert [r["name"] for r in report["evaluate"]] == list(SYSTEM_NAMES)
    assert len(report["terms"]) == 3
    # benchmarks/rescore_depth.py reads what the demo wrote; deeper candidate lists can only add agreement
    # with the expanded run (a superset of candidates keeps every expanded top-10 document it had)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rescore_depth.py"
    done = subprocess.run(
        [sys.executable, str(script), "--demo-dir", str(tmp_path / "demo"), "--depths", "5", "50", "500"]
        + ["--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["depth"] for r in rows] == ["expanded", 5, 50, 500]
    overlaps = [r["overlap10_expanded"] for r in rows[1:]]
    assert overlaps == sorted(overlaps) and 0 <= overlaps[0] and overlaps[-1] <= 1
    assert all(r["ms_per_query"] > 0 and 0 <= r["R@1"] <= r["R@5"] <= 1 for r in rows)
