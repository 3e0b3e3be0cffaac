"""The example scripts, run the way a user runs them (subprocesses, few epochs).

Each script is started in a subprocess with this checkout first on ``PYTHONPATH`` (so that it, and the ``d2s``
steps it runs, import the code under test) from a temporary working directory; the tests check the JSON
summary it prints as its last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyterrier_d2s.index_evaluation import SYSTEM_NAMES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_example(script: str, *args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict | list:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_head_report(r: dict, exp: str, eta: float, epochs: int, cwd: Path) -> None:
    """A ``d2s train`` report of a coco500 head (written below ``cwd``): the asked settings, measures in range."""
    assert (r["exp"], r["eta"], r["epochs"]) == (exp, eta, epochs)
    assert 1 <= r["best_epoch"] <= epochs
    # CLIP ViT-B/16 over coco500's 50 held-out test images (data README)
    assert r["held_out"] is True and r["dense_r1"] == pytest.approx(0.86, abs=1e-3)
    assert 0.0 <= r["sparse_r1"] <= r["sparse_r5"] <= r["sparse_r10"] <= 1.0
    assert r["sparse_r1"] <= r["sparse_mrr10"] <= r["sparse_r10"]
    assert r["flops"] >= 0 and r["q_nnz"] >= 0 and r["d_nnz"] > 0
    assert 0.0 <= r["exact20"] <= 1.0 and -1.0 <= r["semantic20"] <= 1.0
    assert (cwd / r["out"] / "config.json").is_file()


@pytest.mark.slow
def test_exp_ablation_demo(tmp_path):
    proc = run_example(
        "exp_ablation.py",
        "--demo",
        "--epochs",
        "2",
        "--modes",
        "0",
        "c+w",
        "--etas",
        "1e-3",
        "--out",
        "ab",
        cwd=tmp_path,
    )
    rows = last_json(proc)
    assert [r["exp"] for r in rows] == ["0", "c+w"]
    for r in rows:
        check_head_report(r, r["exp"], 1e-3, 2, tmp_path)
    # exp = 0 queries keep only the caption's own tokens (a COCO caption has < 30)
    assert rows[0]["q_nnz"] < 30
    # the paper's MSCOCO BLIP numbers (Table 2 R@1 / R@5 / MRR@10 / FLOPs; exp 0 and c+w have no Table 3 row)
    assert rows[0]["paper"]["R@1"] == 45.5 and rows[0]["paper"]["FLOPs"] == 2.8
    assert rows[1]["paper"]["R@1"] == 51.8 and rows[1]["paper"]["Exact@20"] is None
    assert "45.5 / 73.0 / 57.3 / 2.8" in proc.stdout and "51.8 / 79.3 / 63.4 / 11.5" in proc.stdout


def test_exp_ablation_rejects_unknown_paper_reference(tmp_path):
    proc = run_example("exp_ablation.py", "--demo", "--paper", "coco-clip", cwd=tmp_path, ok=False)
    assert proc.returncode == 2 and "no paper numbers for 'coco-clip'" in proc.stderr


@pytest.mark.slow
def test_eta_sweep_demo(tmp_path):
    proc = run_example(
        "eta_sweep.py", "--demo", "--epochs", "2", "--etas", "1e-2", "1e-3", "--out", "sweep", cwd=tmp_path
    )
    rows = last_json(proc)
    assert [r["eta"] for r in rows] == [1e-2, 1e-3]
    for r in rows:
        check_head_report(r, "c+w", r["eta"], 2, tmp_path)
    figure = tmp_path / "sweep" / "tradeoff.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # η = 1e-2 is quoted in Sec. 5.2 without R@5; η = 1e-3 is Table 1's D2S (BLIP) row
    assert rows[0]["paper"]["R@1"] == 47.2 and rows[0]["paper"]["R@5"] is None
    assert rows[1]["paper"]["FLOPs"] == 11.5
    assert "dense R@1: 86.0 (paper, Table 1: 57.3 for BLIP on MSCOCO 5k)" in proc.stdout


@pytest.mark.slow
def test_reproduce_paper_demo(tmp_path):
    proc = run_example(
        "reproduce_paper.py", "--demo", "--epochs", "2", "--quiet", "--out", "rp", cwd=tmp_path
    )
    summary = last_json(proc)
    assert summary["demo"] is True and summary["seconds"] > 0
    (run,) = summary["runs"]
    assert (run["dataset"], run["model"], run["data"], run["paper_ref"]) == (
        "coco500",
        "clip",
        "coco500",
        "mscoco-blip",
    )
    assert run["dense"]["R@1"] == pytest.approx(0.86, abs=1e-3)  # coco500's test images
    (head,) = run["heads"]
    check_head_report(head, "c+w", 1e-3, 2, tmp_path)
    systems = {s["name"]: s for s in head["evaluate"]}
    assert list(systems) == list(SYSTEM_NAMES)
    for s in systems.values():
        assert 0.0 <= s["R@1"] <= s["R@5"] <= 1.0 and s["ms_per_query"] > 0
    assert systems["dense"]["R@1"] == pytest.approx(run["dense"]["R@1"])
    assert systems["dense"]["flops"] is None
    # an expanded query holds the caption's own terms and more: never fewer posting-list operations
    assert systems["d2s-expanded"]["flops"] >= systems["d2s-noexp"]["flops"] > 0
    # PISA over quantised impacts agrees with the exact sparse scoring of d2s train (up to ties)
    # (50 test captions: 0.04 is two of them)
    assert systems["d2s-expanded"]["R@1"] == pytest.approx(head["sparse_r1"], abs=0.04)
    # paper: Table 1 D2S (BLIP, η = 1e-3) on MSCOCO, Table 5 ρ
    assert head["paper"]["R@1"] == 51.8 and head["paper"]["rho"] == [74.0, 76.9, 83.8]
    assert "| dense | – | – | 86.0 | 98.0 | 91.3 |" in proc.stdout
    terms = summary["terms"]
    assert terms["head"] == head["out"] and len(terms["items"]) == 3
    for item in terms["items"]:
        assert len(item["caption_terms"]) == 10 and len(item["image_terms"]) == 10
        assert item["paper"] is None  # coco500 holds none of Table 4's captions
        assert item["split"] == "test"  # the head's held-out captions
    assert "Top-10 terms of captions and their images" in proc.stdout
    assert "[info]" not in proc.stdout  # PISA's native indexing log goes to stderr, stdout keeps the tables


def _authors_dir(path: Path, rng: np.random.Generator) -> None:
    """A small data set in the authors' format: parquet vectors + Karpathy meta with train/val/test."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    words = "dog cat car red man woman bike road table pizza beach bird".split()
    images, img_rows, txt_rows, sentid = [], [], [], 0
    for imgid in range(36):
        split = "train" if imgid < 24 else ("val" if imgid < 30 else "test")
        base = rng.standard_normal(16)
        img_rows.append((imgid, base / np.linalg.norm(base)))
        sentences = []
        for _ in range(2):
            text = "A " + " ".join(rng.choice(words, 4)) + "."
            if sentid == 3:  # one of Table 4's captions, in the training split
                text = "A couple of dogs sitting in the front seats of a car."
            vec = base + 0.3 * rng.standard_normal(16)
            txt_rows.append((sentid, vec / np.linalg.norm(vec)))
            sentences.append({"sentid": sentid, "raw": text})
            sentid += 1
        images.append({"imgid": imgid, "split": split, "filename": f"{imgid}.jpg", "sentences": sentences})
    path.mkdir(parents=True)
    for name, rows in (("img_embs.parquet", img_rows), ("text_embs.parquet", txt_rows)):
        table = pa.table(
            {"id": [r[0] for r in rows], "emb": [r[1].astype(np.float32).tolist() for r in rows]}
        )
        pq.write_table(table, path / name)
    (path / "dataset_meta.json").write_text(json.dumps({"images": images}))


@pytest.mark.slow
def test_reproduce_paper_from_authors_vectors(tmp_path):
    """The paper path (no --demo) on a tiny authors'-format directory: lookup, training, Table 4 captions."""
    _authors_dir(tmp_path / "vectors" / "mscoco-blip-dense", np.random.default_rng(0))
    proc = run_example(
        "reproduce_paper.py",
        "--vectors",
        "vectors",
        "--datasets",
        "mscoco",
        "--models",
        "blip",
        "--etas",
        "1e-3",
        "--epochs",
        "1",
        "--evaluate-modes",
        "--quiet",
        "--out",
        "rp",
        cwd=tmp_path,
    )
    assert "--batch-size 512" in proc.stderr  # the published setting is passed on
    summary = last_json(proc)
    (run,) = summary["runs"]
    assert run["paper_ref"] == "mscoco-blip" and run["data"].endswith("mscoco-blip-dense")
    assert 0.0 <= run["dense"]["R@1"] <= 1.0
    (head,) = run["heads"]
    assert head["evaluate"] is None and head["epochs"] == 1
    assert head["paper"]["R@1"] == 51.8 and head["paper"]["FLOPs"] == 11.5
    assert "57.3 / 81.8 / 67.8 / – (Table 1)" in proc.stdout
    items = summary["terms"]["items"]
    assert len(items) == 3
    assert items[0]["caption"] == "A couple of dogs sitting in the front seats of a car."
    assert items[0]["paper"]["c/caption"][:3] == ["dogs", "dog", "car"]
    # the other two are test-split captions (images 30-35, sentences 60-71)
    assert [int(i["caption_id"]) for i in items[1:]] == [60, 61] and items[1]["paper"] is None


def _authors_checkpoint(snapshot: Path, dense: int, hidden: int = 8) -> None:
    """An authors'-format head (config.json model_type d2s + proj/vocab_layer_norm/vocab_projector) at random."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    state = {
        "proj.weight": torch.randn(hidden, dense, generator=g),
        "proj.bias": torch.zeros(hidden),
        "vocab_layer_norm.weight": torch.ones(hidden),
        "vocab_layer_norm.bias": torch.zeros(hidden),
        "vocab_projector.weight": torch.randn(30522, hidden, generator=g),
        "vocab_projector.bias": torch.full((30522,), -2.0),
    }
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    config = {"model_type": "d2s", "mlm_head": "distilbert-base-uncased", "dense_size": dense}
    (snapshot / "config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_reproduce_paper_with_authors_checkpoint(tmp_path, monkeypatch):
    """--checkpoint: the authors' head by Hub id (offline, from a Hub cache in tmp), no training, paper beside."""
    _authors_dir(tmp_path / "vectors" / "mscoco-blip-dense", np.random.default_rng(0))
    name = "d2s_mscoco-blip-dense_q_reg_0.001_d_reg_0.001"
    repo = tmp_path / "hub" / f"models--lsr42--{name}"
    _authors_checkpoint(repo / "snapshots" / ("a" * 40), dense=16)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--vectors", "vectors", "--checkpoint", f"lsr42/{name}", "--quiet", "--out", "rp"]
    proc = run_example("reproduce_paper.py", *args, cwd=tmp_path)
    assert "$ d2s train" not in proc.stderr and "$ d2s index" in proc.stderr
    (run,) = last_json(proc)["runs"]
    assert (run["dataset"], run["model"]) == ("mscoco", "blip")
    (head,) = run["heads"]
    assert head["checkpoint"] == f"lsr42/{name}" and head["eta"] == 1e-3
    assert head["paper"]["R@1"] == 51.8 and head["paper"]["FLOPs"] == 11.5
    expanded = next(s for s in head["evaluate"] if s["name"] == "d2s-expanded")
    assert head["sparse_r1"] == expanded["R@1"] and 0.0 <= expanded["R@1"] <= 1.0
    assert "51.8 / 79.3 / 63.4 / 11.5" in proc.stdout
    absent = f"other/{name}"
    proc = run_example("reproduce_paper.py", *args[:3], absent, cwd=tmp_path, ok=False)
    assert f"--checkpoint {absent}: {absent}: no such directory, and HF_HUB_OFFLINE is set" in proc.stderr
    proc = run_example("reproduce_paper.py", *args[:3], "lsr42/other", cwd=tmp_path, ok=False)
    assert "lsr42/other: not named d2s_<dataset>-<model>-dense_q_reg_<eta>_d_reg_<eta>" in proc.stderr


def test_reproduce_paper_without_vectors_says_where_to_get_them(tmp_path):
    proc = run_example(
        "reproduce_paper.py",
        "--vectors",
        "none",
        "--datasets",
        "flickr30k",
        "--models",
        "albef",
        cwd=tmp_path,
        ok=False,
    )
    assert proc.returncode != 0
    assert "no vectors at none/flickr30k-albef-dense: use --download" in proc.stderr
