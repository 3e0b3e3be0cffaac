"""The d2s subcommands that work on a trained head (index, evaluate, search, explain, plot, demo, train) and the
library functions behind them, called directly as a notebook would."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_unsplit_vectors_dir

from pyterrier_d2s.cli import main
from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.index import D2SIndex
from pyterrier_d2s.index_evaluation import SYSTEM_NAMES
from pyterrier_d2s.model import D2S


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
    # coco500's test split (the head has no split.json: the data's own labels)
    assert meta["type"] == "sparse_index" and meta["num_docs"] == 50
    assert meta["mean_doc_nnz"] > 0
    # no engine is built with the index; PISA builds on first use, losing < 0.5 % of the weight mass
    assert not list(index_dir.glob("engines/pisa-*"))
    assert D2SIndex(index_dir).engine("pisa").collection().info["doc_mass_lost"] < 0.005
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
    # CLIP ViT-B/16 over coco500's 50 test images (data README)
    assert dense["R@1"] == pytest.approx(0.86, abs=1e-3) and dense["flops"] is None
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
    assert 0.0 <= rep["mean_overlap@10"] <= 1.0 and rep["queries"] == 50  # the test captions
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
    # held out end to end: trained on the 400 training images, indexed and evaluated on the 50 test images
    assert report["train"]["held_out"] is True and report["train"]["split"]["n_test"] == 50
    assert report["train"]["epochs"] == 1 and report["index"]["documents"] == 50
    test_ids = set(json.loads((tmp_path / "demo" / "head" / "split.json").read_text())["test"])
    assert set(D2SIndex(tmp_path / "demo" / "index").forward().docnos) == test_ids
    # the rescorer's first stage is an exp=0 head's index (the paper's Table 6 pairing)
    assert report["train_noexp"]["exp"] == "0" and report["train_noexp"]["epochs"] == 1
    assert report["index_noexp"]["documents"] == 50
    noexp = {r["name"]: r for r in report["evaluate"]}["d2s-noexp"]
    assert noexp["flops"] == pytest.approx(report["train_noexp"]["flops"], rel=1e-6)
    assert [r["name"] for r in report["evaluate"]] == list(SYSTEM_NAMES)
    # Table 4's view: the first three test captions
    assert [t["split"] for t in report["terms"]] == ["test"] * 3
    data = load_pairs("coco500")
    first_test = [
        c for c, r in zip(data.caption_ids, data.caption_image, strict=True) if data.image_ids[r] in test_ids
    ]
    assert [t["caption_id"] for t in report["terms"]] == first_test[:3]
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


def test_explain_defaults_to_test_captions_and_flags_training_ones(head_dir, capsys):
    data = load_pairs("coco500")
    _, err, report = run_with_err(capsys, "explain", "--model", head_dir, "--data", "coco500", "-k", "3")
    test_rows = [r for r in range(500) if data.image_split[data.caption_image[r]] == "test"][:3]
    assert [i["caption_id"] for i in report["items"]] == [data.caption_ids[r] for r in test_rows]
    assert "note:" not in err
    train_row = next(r for r in range(500) if data.image_split[data.caption_image[r]] == "train")
    _, err, report = run_with_err(
        capsys, "explain", "--model", head_dir, "--data", "coco500", "--id", data.caption_ids[train_row]
    )
    assert report["items"][0]["split"] == "train" and "is not a test image of this head (train)" in err


def test_train_index_evaluate_on_the_same_test_images(tmp_path, capsys):
    """coco500 round trip: the head's split.json, the index and the evaluation hold the same 50 test images."""
    head, index = tmp_path / "h", tmp_path / "i"
    _, err, report = run_with_err(
        capsys, "train", "--data", "coco500", "--epochs", "1", "--quiet", "--out", head
    )
    assert report["held_out"] is True
    assert report["split"] == {"source": "labels", "n_train": 400, "n_val": 50, "n_test": 50}
    assert report["dense_r1"] == pytest.approx(0.86)
    split = json.loads((head / "split.json").read_text())
    data = load_pairs("coco500")
    test_ids = [i for i, s in zip(data.image_ids, data.image_split, strict=True) if s == "test"]
    assert split["held_out"] is True and split["test"] == test_ids
    _, rep = run(capsys, "index", "--model", head, "--data", "coco500", "--out", index)
    assert rep["documents"] == 50 and rep["images"] == "test"
    assert sorted(D2SIndex(index).forward().docnos) == sorted(test_ids)
    _, rows = run(capsys, "evaluate", "--model", head, "--index", index, "--data", "coco500")
    by_name = {r["name"]: r for r in rows}
    # the same test captions as d2s train's report: its dense reference and (up to PISA's ties) its sparse R@1
    assert by_name["dense"]["R@1"] == pytest.approx(report["dense_r1"])
    assert by_name["d2s-expanded"]["R@1"] == pytest.approx(report["sparse_r1"], abs=0.04)
    # an index of every image is not the head's test set
    assert (
        main(
            [
                "index",
                "--model",
                str(head),
                "--data",
                "coco500",
                "--out",
                str(tmp_path / "all"),
                "--all-splits",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["evaluate", "--model", str(head), "--index", str(tmp_path / "all"), "--data", "coco500"]) == 2
    )
    assert "holds 500 images, not the 50 of coco500[test]" in capsys.readouterr().err


def test_train_no_split_reports_held_out_false(tmp_path, capsys):
    _, err, report = run_with_err(
        capsys,
        "train",
        "--data",
        "coco500",
        "--epochs",
        "1",
        "--quiet",
        "--no-split",
        "--out",
        tmp_path / "h",
    )
    assert report["held_out"] is False and "--no-split" in err and "held_out: false" in err
    assert report["split"] == {"source": "none", "n_train": 500, "n_val": 500, "n_test": 500}
    assert report["dense_r1"] == pytest.approx(0.506, abs=1e-3)  # every image
    assert json.loads((tmp_path / "h" / "split.json").read_text())["held_out"] is False
    # its index and evaluation are on everything too
    _, rep = run(capsys, "index", "--model", tmp_path / "h", "--data", "coco500", "--out", tmp_path / "i")
    assert rep["documents"] == 500 and rep["images"] == "all"


def test_train_option_errors(tmp_path, capsys):
    out = str(tmp_path / "h")
    for argv, message in [
        (["--fold", "1"], "give both --fold and --num-folds"),
        (["--split-seed", "3"], "--split-seed: coco500 has its own split labels (test, train, val)"),
        (["--no-split", "--split-seed", "3"], "--no-split cannot be combined with --split-seed"),
        (["--own-token-fit", "-2"], "own_token_fit must be >= 0, not -2"),
        (["--own-token-fit", "5", "--recipe", "paper"], "own_token_fit needs init='text-space'"),
    ]:
        assert main(["train", "--data", "coco500", "--epochs", "1", "--quiet", "--out", out, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("d2s train: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_train_on_data_without_labels_reports_held_out_numbers(tmp_path, capsys):
    data_dir = write_unsplit_vectors_dir(tmp_path / "d", 120)
    head = tmp_path / "h"
    _, _, report = run_with_err(
        capsys, "train", "--data", data_dir, "--epochs", "1", "--quiet", "--split-seed", "7", "--out", head
    )
    # 120 images: 12 test, 12 validation, 96 training, drawn with seed 7
    assert report["held_out"] is True
    assert report["split"] == {
        "source": "seeded",
        "seed": 7,
        "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
        "n_train": 96,
        "n_val": 12,
        "n_test": 12,
    }
    split = json.loads((head / "split.json").read_text())
    coco = load_pairs("coco500")
    order = np.random.default_rng(7).permutation(120)
    assert split["test"] == [coco.image_ids[r] for r in sorted(order[:12])]
    # dense R@1 by hand over those 12 images and their captions (row i of coco500's captions is image i)
    rows = np.array([coco.image_ids.index(i) for i in split["test"]])
    scores = coco.caption_vectors[rows] @ coco.image_vectors[rows].T
    hand = float(np.mean(scores.argmax(axis=1) == np.arange(len(rows))))
    assert report["dense_r1"] == pytest.approx(hand)
    # index → evaluate on the same data apply split.json: exactly those 12 images
    _, rep = run(capsys, "index", "--model", head, "--data", data_dir, "--out", tmp_path / "i")
    assert sorted(D2SIndex(tmp_path / "i").forward().docnos) == sorted(split["test"])
    _, rows_out = run(capsys, "evaluate", "--model", head, "--index", tmp_path / "i", "--data", data_dir)
    assert rows_out[0]["R@1"] == pytest.approx(hand)
    # a split of the second fold of 4
    _, _, folded = run_with_err(
        capsys,
        "train",
        "--data",
        data_dir,
        "--epochs",
        "1",
        "--quiet",
        "--fold",
        "1",
        "--num-folds",
        "4",
        "--out",
        tmp_path / "f",
    )
    assert folded["split"]["fold"] == 1 and folded["split"]["n_test"] == 30
    # coco500's own labels do not agree with this head's split.json: a one-line error
    assert main(["index", "--model", str(head), "--data", "coco500", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert (
        "coco500: its test split (50 images) is not the one in" in err and len(err.strip().splitlines()) == 1
    )


# -- the library functions behind the subcommands, called the way a notebook calls them ---------------------


def _tiny_explained_model():
    """A 2-d head whose top terms are computed by hand: W1 = I, so LayerNorm maps the caption vector (1, 0)
    to (1, -1) and the image vector (0, 1) to (-1, 1); W2 gives five tokens a row, every other token a zero
    row and bias (weight log1p(relu(0)) = 0, never a top term)."""
    from pyterrier_d2s.data import PairedVectors
    from pyterrier_d2s.vocab import Vocabulary

    vocab = Vocabulary()
    head = D2SHead(D2SHeadConfig(input_dim=2, hidden_dim=2, init="random"), vocab=vocab)
    rows = {"dog": (2.0, 0.0), "red": (0.5, 0.0), "cat": (0.0, 1.0), "bird": (0.0, 3.0), "car": (-1.0, -1.0)}
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(2))
        head.proj.bias.zero_()
        head.vocab_proj.weight.zero_()
        head.vocab_proj.bias.zero_()
        for token, row in rows.items():
            head.vocab_proj.weight[vocab.tokens.index(token)] = torch.tensor(row)
    data = PairedVectors(
        image_ids=["i0", "i1"],
        image_vectors=np.array([[0.0, 1.0], [0.0, 1.0]]),
        caption_ids=["c0", "c1", "c2"],
        caption_texts=["A red dog.", "a bird", "A cat."],
        caption_image=np.array([0, 1, 1]),
        caption_vectors=np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]),
        image_split=np.array(["train", "test"]),
        name="tiny",
    )
    return D2S(head), data


def test_explain_rows_against_hand_computed_terms():
    from pyterrier_d2s import explain

    model, data = _tiny_explained_model()
    # caption (1, -1): dog 2 -> log 3, red 0.5 -> log 1.5 (cat -1, bird -3, car 0: weight 0)
    # image (-1, 1): bird 3 -> log 4, cat 1 -> log 2 (dog -2, red -0.5, car 0: weight 0)
    (item,) = explain.explain_rows(model, data, [0], k=10)
    assert item == {
        "caption_id": "c0",
        "caption": "A red dog.",
        "image_id": "i0",
        "split": "train",
        "caption_terms": ["dog", "red"],
        "image_terms": ["bird", "cat"],
        "own_terms": [".", "a", "dog", "red"],
    }
    assert [i["caption_terms"] for i in explain.explain_rows(model, data, [0], k=1)] == [["dog"]]
    assert explain.format_explained([item]).splitlines() == [
        "",
        "A red dog.  (caption c0, image i0)",
        "  caption: dog* red*",
        "  image:   bird cat",
    ]
    # an image id stands for all its captions; the test split's captions come first by default
    assert explain.caption_rows_of(data, "i1") == [1, 2] and explain.caption_rows_of(data, "c2") == [2]
    assert explain.test_caption_rows(data, 5) == [1, 2] and explain.test_caption_rows(data, 1) == [1]
    with pytest.raises(KeyError, match="neither a caption id nor an image id of tiny"):
        explain.caption_rows_of(data, "nope")


def test_explain_of_a_head_directory_notes_training_images(head_dir):
    from pyterrier_d2s.explain import explain

    data = load_pairs("coco500")
    train_row = next(r for r in range(500) if data.image_split[data.caption_image[r]] == "train")
    notes = []
    items = explain(head_dir, "coco500", data.caption_ids[train_row], k=4, notify=notes.append)
    assert [i["caption_id"] for i in items] == [data.caption_ids[train_row]] and len(
        items[0]["image_terms"]
    ) == 4
    assert notes == [
        f"{data.caption_ids[train_row]!r} is not a test image of this head (train): its terms were seen in training"
    ]


def test_cli_defaults_are_the_library_defaults():
    """d2s train's and d2s demo's defaults are TrainConfig's (run_demo builds its TrainConfig from those)."""
    import dataclasses
    import inspect

    from pyterrier_d2s.cli import build_parser
    from pyterrier_d2s.demo import run_demo
    from pyterrier_d2s.index_evaluation import evaluate_index
    from pyterrier_d2s.training import TrainConfig

    args = vars(build_parser().parse_args(["train", "--data", "coco500", "--out", "x"]))
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    shared = set(args) & set(defaults)
    # 19 shared fields; tau and candidates default to None (the recipe's) on both sides
    assert len(shared) == 19 and {k: args[k] for k in shared} == {k: defaults[k] for k in shared}
    demo = vars(build_parser().parse_args(["demo"]))
    demo_params = inspect.signature(run_demo).parameters
    for name in ("out", "exp", "eta", "seed", "epochs", "noexp_epochs"):
        assert demo[name] == demo_params[name].default
    evaluate = vars(build_parser().parse_args(["evaluate", "--model", "m", "--index", "i", "--data", "d"]))
    for name in ("candidates", "num_results"):
        assert evaluate[name] == inspect.signature(evaluate_index).parameters[name].default


def test_evaluate_index_dense_row_is_brute_force(index_dir, head_dir):
    from pyterrier_d2s.index_evaluation import comparison_records, dense_overlaps, evaluate_index

    notes = []
    table = evaluate_index(head_dir, index_dir, "coco500", num_results=10, notify=notes.append)
    assert list(table["name"]) == list(SYSTEM_NAMES) and len(notes) == 1 and "exp=c+w head" in notes[0]
    test = load_pairs("coco500").subset("test")
    scores = test.caption_vectors @ test.image_vectors.T
    # each coco500 caption has one image: R@1 = its image ranks first, RR@10 = 1/rank within the top 10
    ranks = (scores > scores[np.arange(len(scores)), test.caption_image][:, None]).sum(axis=1)
    dense = comparison_records(table)[0]
    assert dense["R@1"] == pytest.approx(np.mean(ranks == 0))
    assert dense["RR@10"] == pytest.approx(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0)))
    assert dense["flops"] is None and dense["overlap@10"] == 1.0
    # the per-caption top-10 overlap of the expanded search with the dense top 10, by hand
    overlaps = dense_overlaps(head_dir, index_dir, "coco500", k=10)
    model = D2S.from_pretrained(head_dir)
    sparse = (model.query_encoder() >> D2SIndex(index_dir).retriever(num_results=10))(test.topics())
    for n, qid in enumerate(test.caption_ids[:10]):
        dense_top = {test.image_ids[j] for j in np.argsort(-scores[n], kind="stable")[:10]}
        found = set(sparse.loc[sparse["qid"] == qid, "docno"])
        assert overlaps[qid] == pytest.approx(len(dense_top & found) / 10)


def test_search_and_check_index(index_dir, head_dir, tmp_path):
    import shutil

    from pyterrier_d2s.indexing import check_index, search

    data = load_pairs("coco500")
    hits = search(head_dir, index_dir, data="coco500", qid=data.caption_ids[7], num_results=3)
    assert hits.query == data.caption_texts[7] and [h["rank"] for h in hits.records()] == [0, 1, 2]
    with pytest.raises(KeyError, match="no caption with id 'nope'"):
        search(head_dir, index_dir, data="coco500", qid="nope")
    assert check_index(index_dir) == {"index": str(index_dir), "ok": True, "documents": 50}
    damaged = tmp_path / "damaged"
    shutil.copytree(index_dir, damaged)
    with open(damaged / "forward.npz", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    problems = []
    with pytest.raises(ValueError, match="1 file"):
        check_index(damaged, on_problem=problems.append)
    assert len(problems) == 1 and "forward.npz: contents differ from the build" in problems[0]


def test_training_split_and_checkpoint_handling(tmp_path):
    from pyterrier_d2s.training_run import (
        refuse_checkpoint_of_another_split,
        set_aside_checkpoint,
        training_split,
    )

    data = load_pairs(write_unsplit_vectors_dir(tmp_path / "d", 40))
    notes = []
    everything = training_split(data, tmp_path / "all", no_split=True, notify=notes.append)
    assert len(everything.image_ids) == 40 and notes == [
        f"--no-split: trained, validated and reported on the same 40 images of {data.name} (held_out: false)"
    ]
    with pytest.raises(ValueError, match="give both --fold and --num-folds"):
        training_split(data, tmp_path / "x", fold=1)
    # seeded 80/10/10 by image: the test images are the first 4 of seed 3's permutation
    seeded = training_split(data, tmp_path / "h", split_seed=3)
    order = np.random.default_rng(3).permutation(40)
    assert sorted(seeded.subset("test").image_ids) == sorted(data.image_ids[r] for r in order[:4])
    # a checkpoint there belongs to seed 3's split: another split is refused, the same one passes
    torch.save({"epoch": 1}, tmp_path / "h" / "checkpoint.pt")
    refuse_checkpoint_of_another_split(seeded, tmp_path / "h")
    with pytest.raises(ValueError, match="is from a run on another split"):
        training_split(data, tmp_path / "h", split_seed=4)
    # set aside: a readable checkpoint becomes .old, an unreadable one .corrupt, none: None
    assert set_aside_checkpoint(tmp_path / "h") == tmp_path / "h" / "checkpoint.pt.old"
    assert set_aside_checkpoint(tmp_path / "h") is None
    (tmp_path / "h" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert set_aside_checkpoint(tmp_path / "h") == tmp_path / "h" / "checkpoint.pt.corrupt"


def test_train_head_from_python_saves_its_report(tmp_path):
    from pyterrier_d2s.training import TrainConfig
    from pyterrier_d2s.training_run import saved_test_report, train_head

    data_dir = write_unsplit_vectors_dir(tmp_path / "d", 60)
    report = train_head(
        data_dir, tmp_path / "h", TrainConfig(epochs=1, exp="c"), split_seed=2, progress=False
    )
    assert report["exp"] == "c" and report["epochs"] == 1 and report["split"]["n_test"] == 6
    assert saved_test_report(tmp_path / "h") == json.loads(json.dumps(report))
    with pytest.raises(FileNotFoundError, match="not a head directory"):
        saved_test_report(tmp_path / "d")
