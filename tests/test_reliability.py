"""Bad input ends in one clear line naming the file or option, never a traceback or a silent wrong result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_unsplit_vectors_dir

from pyterrier_d2s.cli import _json_safe, main
from pyterrier_d2s.data import DataError, load_pairs
from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.training import TrainConfig
from pyterrier_d2s.training.trainer import CHECKPOINT_NAME


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"d2s {command}: error: "), err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["--eta", "nan"],
        ["--lr-proj", "nan"],
        ["--lr-vocab", "inf"],
        ["--epochs", "0"],
        ["--batch-size", "-3"],
    ],
)
def test_non_finite_or_out_of_range_train_options_are_refused(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:  # argparse: usage + one error line, exit 2, before any work
        main(["train", "--data", "coco500", "--out", str(tmp_path / "h"), *argv])
    assert e.value.code == 2
    assert argv[0] in capsys.readouterr().err
    assert not (tmp_path / "h").exists()


def test_config_ranges_are_checked():
    for bad in ({"eta": -1.0}, {"tau": 0.0}, {"lam": 1.5}, {"lr_vocab": -1e-3}, {"warmup_ratio": 2.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_search_refuses_a_negative_k(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--model", "m", "--index", "i", "-k", "-5", "a dog"])
    assert e.value.code == 2 and "-k/--num-results" in capsys.readouterr().err


def test_json_output_is_strict_json():
    assert _json_safe({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)}) == {
        "a": None,
        "b": [1.5, None],
        "c": 3,
    }
    json.dumps(_json_safe({"x": float("-inf")}), allow_nan=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b""), "unreadable .npy file"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "unreadable .npy file"),
        (lambda p: np.save(p, np.zeros(4, dtype=[("a", "f4"), ("b", "i4")])), "must be real numbers"),
        (lambda p: np.save(p, np.array(["x", "y"])), "must be real numbers"),
        (lambda p: np.save(p, np.array([[1.0], "a"], dtype=object), allow_pickle=True), "not Python objects"),
        (lambda p: np.save(p, np.zeros((3, 0), np.float32)), "must be a 2-d array"),
        (lambda p: np.save(p, np.zeros(3, np.float32)), "must be a 2-d array"),
    ],
)
def test_damaged_vector_files_name_the_file(tmp_path, damage, message):
    d = write_unsplit_vectors_dir(tmp_path / "d", 10)
    damage(d / "caption_vectors.npy")
    with pytest.raises(DataError, match=message) as e:
        load_pairs(d)
    assert "caption_vectors.npy" in str(e.value)


def test_damaged_vector_files_from_the_cli(tmp_path, capsys):
    d = write_unsplit_vectors_dir(tmp_path / "d", 10)
    (d / "image_vectors.npy").write_bytes(b"")
    assert main(["train", "--data", str(d), "--out", str(tmp_path / "h"), "--quiet"]) == 2
    assert "image_vectors.npy" in one_error_line(capsys, "train")


@pytest.fixture()
def saved_head(tmp_path, vocab):
    head = D2SHead(D2SHeadConfig(input_dim=8, hidden_dim=16, init="random"), vocab=vocab)
    head.save_pretrained(tmp_path / "h")
    return tmp_path / "h"


def test_damaged_heads_are_reported_with_the_file(saved_head):
    cfg = json.loads((saved_head / "config.json").read_text())
    weights = (saved_head / "model.safetensors").read_bytes()
    cases = [
        ("config.json", "{ not json", "not valid JSON"),
        ("config.json", json.dumps({**cfg, "input_dim": 9}), "does not match config.json"),
        ("config.json", json.dumps({**cfg, "exp": "2"}), "exp must be one of"),
        ("config.json", json.dumps({**cfg, "type": "splade"}), "is not a D2S head"),
        ("config.json", json.dumps({k: v for k, v in cfg.items() if k != "input_dim"}), "input_dim"),
        ("model.safetensors", weights[: len(weights) // 2], "unreadable safetensors file"),
    ]
    for name, content, message in cases:
        path = saved_head / name
        original = path.read_bytes()
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        with pytest.raises(ValueError, match=message):
            D2SHead.from_pretrained(saved_head)
        path.write_bytes(original)
    loaded = D2SHead.from_pretrained(saved_head)  # restored: loads again
    assert loaded.config.input_dim == 8


def test_restart_keeps_an_unreadable_checkpoint_aside(tmp_path, capsys):
    d = write_unsplit_vectors_dir(tmp_path / "d", 40)
    out = tmp_path / "h"
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes(b"truncated")
    argv = ["train", "--data", str(d), "--out", str(out), "--epochs", "1", "--quiet"]
    assert main(argv) == 2
    err = one_error_line(capsys, "train")
    assert CHECKPOINT_NAME in err and "--restart" in err
    assert main([*argv, "--restart"]) == 0
    assert (out / (CHECKPOINT_NAME + ".corrupt")).read_bytes() == b"truncated"
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1


def test_device_cuda_without_cuda_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--data", "coco500", "--out", str(tmp_path / "h"), "--device", "cuda"]) == 2
    assert "CUDA" in one_error_line(capsys, "train")


def test_changed_weight_bytes_are_found_on_load(saved_head):
    weights = saved_head / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF  # inside the last tensor's values: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="weights changed since the head was saved"):
        D2SHead.from_pretrained(saved_head)


def _random_head_dir(path, vocab, seed):
    torch.manual_seed(seed)
    head = D2SHead(D2SHeadConfig(input_dim=512, hidden_dim=384), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(-1.5)
    head.save_pretrained(path)
    return str(path)


def test_an_index_is_searched_only_with_the_head_that_built_it(tmp_path, capsys, vocab):
    a, b = _random_head_dir(tmp_path / "a", vocab, 0), _random_head_dir(tmp_path / "b", vocab, 1)
    index = str(tmp_path / "idx")
    assert main(["index", "--model", a, "--data", "coco500", "--out", index]) == 0
    qid = load_pairs("coco500").evaluation_split().caption_ids[0]
    capsys.readouterr()
    search = ["search", "--index", index, "--data", "coco500", "--qid", qid]
    assert main([*search, "--model", a]) == 0
    capsys.readouterr()
    assert main([*search, "--model", b]) == 2
    assert "built with another head" in one_error_line(capsys, "search")
    # d2s check: intact, then a damaged file is named and the exit status is 2
    assert main(["check", index]) == 0
    capsys.readouterr()
    with open(tmp_path / "idx" / "forward.npz", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert main(["check", index]) == 2
    err = capsys.readouterr().err
    assert "forward.npz: contents differ from the build" in err and "1 file(s) damaged" in err


def test_reader_messages_name_line_and_fault(tmp_path, caplog):
    d = write_unsplit_vectors_dir(tmp_path / "d", 10)
    lines = (d / "captions.jsonl").read_bytes().splitlines(keepends=True)
    (d / "captions.jsonl").write_bytes(b"".join(lines[:3] + [b'{"caption": "caf\xe9"}\n'] + lines[4:]))
    with pytest.raises(DataError, match=r"captions.jsonl:4: not UTF-8 text"):
        load_pairs(d)
    (d / "captions.jsonl").write_bytes(b"".join(lines[:3] + [b"[1, 2]\n"] + lines[4:]))
    with pytest.raises(DataError, match=r"captions.jsonl:4: expected a JSON object, got list"):
        load_pairs(d)
    row = json.loads(lines[3])
    row["caption"] = 1234
    (d / "captions.jsonl").write_bytes(b"".join(lines[:3] + [json.dumps(row).encode() + b"\n"] + lines[4:]))
    with pytest.raises(DataError, match=f"caption {row['caption_id']!r}: text must be a string, not int"):
        load_pairs(d)
    (d / "captions.jsonl").write_bytes(b"".join(lines))
    np.save(d / "image_vectors.npy", np.load(d / "image_vectors.npy").astype(np.float16))
    with caplog.at_level("WARNING"):
        load_pairs(d)
    assert "float16 vectors are used as float32" in caplog.text
