"""Heads from the Hugging Face Hub, offline: a Hub cache laid out in a temp dir in huggingface_hub's own layout
(``models--org--name/snapshots/REV/...`` + ``refs/main``), loaded by Hub id with ``HF_HUB_OFFLINE=1`` through
``from_pretrained``; the authors' checkpoint format against a plain-torch re-implementation of their forward;
push → load against a local directory standing in for the remote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pyterrier_d2s.head import D2SHead, D2SHeadConfig
from pyterrier_d2s.hub import model_card
from pyterrier_d2s.model import D2S

REV1, REV2 = "1" * 40, "2" * 40


def _snapshot(cache: Path, repo_id: str, rev: str, main: bool = True) -> Path:
    """An empty snapshot directory of ``repo_id`` at ``rev`` in the Hub cache ``cache`` (``main`` → it)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _head(vocab, seed: int, input_dim: int = 8) -> D2SHead:
    torch.manual_seed(seed)
    head = D2SHead(D2SHeadConfig(input_dim=input_dim, hidden_dim=6, init="random"), vocab=vocab)
    with torch.no_grad():
        head.vocab_proj.bias.fill_(-0.5)
    return head


def _dense(n: int = 5, d: int = 8, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_our_head_loads_by_hub_id_offline(hub_cache, vocab):
    head = _head(vocab, seed=1)
    head.save_pretrained(_snapshot(hub_cache, "org/d2s-test", REV1))
    loaded = D2SHead.from_pretrained("org/d2s-test")
    assert loaded.fingerprint() == head.fingerprint()
    z = _dense()
    assert (loaded.encode(z) != head.encode(z)).nnz == 0
    model = D2S.from_pretrained("org/d2s-test")  # the model factory takes the same path
    assert model.head.fingerprint() == head.fingerprint()


def test_revision_selects_the_snapshot(hub_cache, vocab):
    old, new = _head(vocab, seed=1), _head(vocab, seed=2)
    old.save_pretrained(_snapshot(hub_cache, "org/d2s-rev", REV1, main=False))
    new.save_pretrained(_snapshot(hub_cache, "org/d2s-rev", REV2))
    assert D2SHead.from_pretrained("org/d2s-rev").fingerprint() == new.fingerprint()
    assert D2SHead.from_pretrained("org/d2s-rev", revision=REV1).fingerprint() == old.fingerprint()
    assert D2S.from_pretrained("org/d2s-rev", revision=REV1).head.fingerprint() == old.fingerprint()


def test_missing_offline_is_one_clear_error(hub_cache, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"org/absent: no such directory, and HF_HUB_OFFLINE is set"):
        D2SHead.from_pretrained("org/absent")
    with pytest.raises(ValueError, match="revision='main' is for Hub ids"):
        D2SHead.from_pretrained(tmp_path, revision="main")
    with pytest.raises(FileNotFoundError, match="is not a D2S head directory"):
        D2SHead.from_pretrained(tmp_path / "nothing")  # a path, not a Hub id: the old error


# -- the authors' format --------------------------------------------------------------------------------
DENSE, HIDDEN, VOCAB = 16, 32, 30522


def _authors_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "proj.weight": torch.randn(HIDDEN, DENSE, generator=g) * 0.3,
        "proj.bias": torch.randn(HIDDEN, generator=g) * 0.1,
        "vocab_layer_norm.weight": 1 + 0.1 * torch.randn(HIDDEN, generator=g),
        "vocab_layer_norm.bias": 0.1 * torch.randn(HIDDEN, generator=g),
        "vocab_projector.weight": torch.randn(VOCAB, HIDDEN, generator=g) * 0.2,
        "vocab_projector.bias": torch.randn(VOCAB, generator=g) * 0.5 - 1.0,
    }


def _authors_config() -> dict:
    return {
        "architectures": ["D2SModel"],
        "model_type": "d2s",
        "mlm_head": "distilbert-base-uncased",
        "dense_size": DENSE,
        "torch_dtype": "float32",
        "transformers_version": "4.36.2",
    }


def _their_forward(state: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """Their ``D2SModel.forward`` without input ids, in plain torch: log1p(relu(W_v · LN(W_p z + b_p) + b_v))."""
    h = torch.nn.functional.linear(z, state["proj.weight"], state["proj.bias"])
    h = torch.nn.functional.layer_norm(
        h, (HIDDEN,), state["vocab_layer_norm.weight"], state["vocab_layer_norm.bias"], eps=1e-12
    )
    return torch.log1p(torch.relu(h @ state["vocab_projector.weight"].T + state["vocab_projector.bias"]))


def _write_authors(snap: Path, state: dict[str, torch.Tensor], as_bin: bool = False) -> None:
    (snap / "config.json").write_text(json.dumps(_authors_config()))
    if as_bin:
        torch.save(state, snap / "pytorch_model.bin")
    else:
        save_file(state, str(snap / "model.safetensors"))


@pytest.mark.parametrize("as_bin", [False, True], ids=["safetensors", "pytorch_model.bin"])
def test_authors_checkpoint_gives_their_outputs(hub_cache, vocab, as_bin):
    state = _authors_state()
    _write_authors(_snapshot(hub_cache, "lsr42/d2s_test-blip", REV1), state, as_bin=as_bin)
    head = D2SHead.from_pretrained("lsr42/d2s_test-blip")
    assert (head.config.input_dim, head.config.hidden_dim, head.config.vocab_size) == (DENSE, HIDDEN, VOCAB)
    assert head.vocab.tokens == vocab.tokens  # distilbert-base-uncased: the bundled bert-base-uncased copy
    z = torch.from_numpy(_dense(7, DENSE))
    theirs, ours = _their_forward(state, z), head(z).detach()
    special = torch.from_numpy(vocab.special_mask)
    assert torch.allclose(ours[:, ~special], theirs[:, ~special], atol=1e-5, rtol=1e-5)
    assert float(ours[:, special].abs().max()) == 0.0  # [CLS], [unusedN]...: never weight in this package
    assert 50 < int((theirs > 0).sum(1).min())  # the comparison covers many active terms
    csr = head.encode(z.numpy())
    dense_theirs = (theirs * (~special)).numpy()
    assert np.allclose(csr.toarray(), dense_theirs, atol=1e-5)


def test_authors_checkpoint_prefers_safetensors_and_saves_in_our_format(hub_cache, tmp_path, vocab):
    snap = _snapshot(hub_cache, "lsr42/d2s_both", REV1)
    good, other = _authors_state(0), _authors_state(1)
    _write_authors(snap, other, as_bin=True)
    _write_authors(snap, good)  # both files: safetensors wins
    head = D2SHead.from_pretrained("lsr42/d2s_both")
    assert torch.equal(head.proj.weight.detach(), good["proj.weight"])
    assert head.config.extra["source"] == "lsr42/d2s_both"
    head.save_pretrained(tmp_path / "converted")
    again = D2SHead.from_pretrained(tmp_path / "converted")
    assert again.fingerprint() == head.fingerprint()


def test_bad_authors_checkpoints_are_named(tmp_path):
    state = _authors_state()
    extra = tmp_path / "extra"
    extra.mkdir()
    _write_authors(extra, {**state, "mlm.bert.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="an unexpected tensor mlm.bert.weight"):
        D2SHead.from_pretrained(extra)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _write_authors(wrong, state)
    cfg = {**_authors_config(), "dense_size": 512}
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="dense_size 512, proj.weight takes 16"):
        D2SHead.from_pretrained(wrong)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    _write_authors(pickled, {**state, "proj.bias": _NotATensor()}, as_bin=True)
    with pytest.raises(ValueError, match="unreadable weights"):  # weights_only=True refuses the object
        D2SHead.from_pretrained(pickled)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(_authors_config()))
    with pytest.raises(FileNotFoundError, match="without model.safetensors or pytorch_model.bin"):
        D2SHead.from_pretrained(empty)


class _NotATensor:
    """A pickled object that is not a tensor: ``torch.load(weights_only=True)`` must refuse to build it."""


# -- push → load ----------------------------------------------------------------------------------------
class _LocalHub:
    """Stands in for the Hub's API: an upload becomes a new snapshot in a local Hub cache, with refs/main."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.created: list[tuple[str, bool | None]] = []
        self.uploads = 0

    def create_repo(self, repo_id: str, private: bool | None = None, exist_ok: bool = False):
        self.created.append((repo_id, private))

    def upload_folder(self, repo_id: str, folder_path: Path, commit_message: str, revision: str | None):
        self.uploads += 1
        rev = f"{self.uploads:040x}"
        snap = self.cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / rev
        shutil.copytree(folder_path, snap)
        (snap.parent.parent / "refs").mkdir(exist_ok=True)
        (snap.parent.parent / "refs" / "main").write_text(rev)
        return {"commit": rev, "message": commit_message, "files": sorted(p.name for p in snap.iterdir())}


def test_push_then_load_by_hub_id(hub_cache, vocab):
    head = _head(vocab, seed=4)
    head.config.dense_encoder = "Salesforce/blip-itm-base-coco"
    head.config.extra = {
        "trained_on": "coco500",
        "eta": 0.001,
        "epochs": 24,
        "test": {"data": "coco500", "exp": "c+w", "held_out": True, "sparse_r1": 0.34, "flops": 20.7},
    }
    api = _LocalHub(hub_cache)
    info = D2S(head).push_to_hub("me/d2s-pushed", private=True, api=api)
    assert api.created == [("me/d2s-pushed", True)]
    assert info["files"] == ["README.md", "config.json", "model.safetensors", "vocab.txt"]
    loaded = D2S.from_pretrained("me/d2s-pushed")
    assert loaded.head.fingerprint() == head.fingerprint()
    card = (hub_cache / "models--me--d2s-pushed" / "snapshots" / info["commit"] / "README.md").read_text()
    assert "## Training data\n\ncoco500" in card
    assert "| eta | 0.001 |" in card and "| epochs | 24 |" in card and "| exp | c+w |" in card
    assert "| sparse_r1 | 0.34 |" in card and "| flops | 20.7 |" in card
    assert 'D2S.from_pretrained("me/d2s-pushed")' in card and "Salesforce/blip-itm-base-coco" in card


def test_model_card_without_training_record():
    card = model_card("x/y", {"input_dim": 8, "hidden_dim": 6, "vocab_size": 30522, "extra": {}})
    assert "## Training data\n\nnot recorded" in card and "not recorded (the head was not saved by" in card
