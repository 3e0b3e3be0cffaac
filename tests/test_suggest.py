"""Image suggestion (arXiv 2402.07736): encoders, loss, save/load, resume, M1-M4 training, the task, the demo.

Most tests run a tiny random-weight BERT (1 layer, width 16) with the package's real WordPiece vocabulary, saved
to a temporary directory and loaded back with ``from_pretrained`` as a user's checkpoint would be.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pyterrier_d2s.suggest.encoders import MLMTermWeights, checkpoint_mlm_head, token_states
from pyterrier_d2s.suggest.model import SuggestBiEncoder, SuggestConfig, text_tokens
from pyterrier_d2s.suggest.presets import PRESETS, preset
from pyterrier_d2s.suggest.task import build_task
from pyterrier_d2s.suggest.trainer import BiEncoderTrainConfig, BiEncoderTrainer, SuggestPairs, info_nce
from pyterrier_d2s.training.loss import flops_norm, l1_norm
from pyterrier_d2s.vocab import default_tokenizer_dir

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a dog runs in the park", "two cats on a red sofa, cats sleeping", "a man riding a horse"]


def _tiny(tmp: Path, mlm: bool) -> str:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    model = BertForMaskedLM(cfg) if mlm else BertModel(cfg)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(default_tokenizer_dir()).save_pretrained(tmp)
    return str(tmp)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A backbone without an MLM head (as all-MiniLM-L6-v2): the MLM head starts from its word embeddings."""
    return _tiny(tmp_path_factory.mktemp("tiny-bert"), mlm=False)


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory) -> str:
    """A backbone with its own MLM head (as distilbert-base-uncased)."""
    return _tiny(tmp_path_factory.mktemp("tiny-bert-mlm"), mlm=True)


@pytest.fixture(scope="module")
def task():
    return build_task("coco500")


def _model(name: str, backbone: str, **kw) -> SuggestBiEncoder:
    torch.manual_seed(0)
    return SuggestBiEncoder(SuggestConfig.for_preset(name, backbone=backbone, image_dim=512, **kw))


# -- encoders -------------------------------------------------------------------------------------------------
def test_mlp_encoder_weights_only_input_tokens_with_their_max(tiny):
    model = _model("M3", tiny)
    tokens = token_states(model.backbone, model.tokens(TEXTS))
    with torch.no_grad():
        model.query_head.score.bias.fill_(0.3)  # about half the tokens positive, half cut by the ReLU
        out = model.query_weights(tokens)
        per_token = torch.log1p(torch.relu(model.query_head.score(tokens.states).squeeze(-1)))
    special = model.vocab.special_mask
    for i in range(len(TEXTS)):
        expected = {}
        for pos in range(int(tokens.attention_mask[i].sum())):
            tid = int(tokens.input_ids[i, pos])
            if not special[tid]:
                expected[tid] = max(expected.get(tid, 0.0), float(per_token[i, pos]))
        nz = set(torch.nonzero(out[i]).squeeze(1).tolist())
        assert nz <= set(expected) and nz  # only the text's own tokens; [CLS]/[SEP]/[PAD] never
        for tid, w in expected.items():
            assert float(out[i, tid]) == pytest.approx(w, abs=1e-6)
    cats = model.vocab.token_to_id["cats"]
    assert list(tokens.input_ids[1]).count(cats) == 2  # a repeated token: the max of its two weights


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_mlm_pooling_equals_brute_force_over_tokens_and_ignores_padding(tiny, pooling):
    model = _model("M2", tiny, pooling=pooling)
    head = model.caption_head
    tokens = token_states(model.backbone, model.tokens(TEXTS))
    with torch.no_grad():
        out = model.document_weights(tokens, None)
        per_token = head.token_weights(tokens.states)  # (B, L, |V|)
        for i in range(len(TEXTS)):
            n = int(tokens.attention_mask[i].sum())
            rows = [per_token[i, pos] for pos in range(n)]
            brute = torch.stack(rows).max(0).values if pooling == "max" else sum(rows)
            assert torch.allclose(out[i], brute, atol=1e-5)
            alone = token_states(model.backbone, model.tokens([TEXTS[i]]))  # no padding at all
            assert torch.allclose(model.document_weights(alone, None)[0], out[i], atol=1e-4)
    assert (out[:, torch.as_tensor(model.vocab.special_mask)] == 0).all()


def test_mlm_head_is_the_checkpoints_own_when_it_has_one(tiny, tiny_mlm):
    weights, emb = checkpoint_mlm_head(tiny_mlm)
    assert weights is not None and torch.equal(weights["decoder.weight"], emb)  # BERT's tied decoder
    head = _model("M1", tiny_mlm).query_head
    assert torch.equal(head.transform.weight, weights["transform.weight"])
    assert checkpoint_mlm_head(tiny)[0] is None  # no head: the fallback starts from the word embeddings
    fallback = _model("M1", tiny).query_head
    assert torch.equal(fallback.transform.weight, torch.eye(16))
    assert float(fallback.decoder.bias.detach()[0]) < 0  # starts sparse


def test_mlm_output_columns_restrict_the_vocabulary(tiny):
    cols = text_tokens(TEXTS)
    model = _model("M1", tiny, output_tokens=cols)
    q = model.encode_queries(TEXTS)
    assert set(q.indices.tolist()) <= set(cols)
    d = model.encode_documents(None, np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32))
    assert set(d.indices.tolist()) <= set(cols)


def test_pooling_and_presets_reject_bad_values(tiny):
    with pytest.raises(ValueError, match="pooling"):
        MLMTermWeights(16, np.zeros(10, dtype=bool), pooling="mean")
    with pytest.raises(ValueError, match="unknown preset 'M9'"):
        preset("M9")
    with pytest.raises(ValueError, match="image_dim"):
        SuggestBiEncoder(SuggestConfig.for_preset("M4", backbone=tiny))
    assert [p.describe() for p in PRESETS.values()][3] == "M4: MLP(query) / MLP(captions) + MLM(image)"


# -- loss -----------------------------------------------------------------------------------------------------
def test_info_nce_and_regularisers_match_hand_computed_values():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # scores [[1, 0], [0, 2]]
    row0 = -math.log(math.e / (math.e + 1))
    row1 = -math.log(math.e**2 / (1 + math.e**2))
    assert float(info_nce(q, d)) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    s = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert float(flops_norm(s)) == pytest.approx(((1 + 3) / 2) ** 2 + ((2 + 0) / 2) ** 2)
    assert float(l1_norm(s)) == pytest.approx((3 + 3) / 2)


def test_training_loss_adds_the_warmed_up_regulariser_of_both_sides(tiny, task):
    model = _model("M3", tiny)
    train = task.subset("train")
    trainer = BiEncoderTrainer(BiEncoderTrainConfig(reg_query=0.3, reg_doc=0.7), progress=False)
    data = trainer.prepare(model, SuggestPairs(train.queries[:4], train.document_texts()[:4]))
    rows = torch.arange(4)
    with torch.no_grad():
        parts = trainer.loss(model, data, rows, reg_factor=0.25)
        q = model.query_weights(data.queries.rows(rows))
        d = model.document_weights(data.captions.rows(rows), None)
    reg = 0.3 * flops_norm(q) + 0.7 * flops_norm(d)
    assert float(parts["total"]) == pytest.approx(float(info_nce(q, d) + 0.25 * reg), rel=1e-5)


# -- save / load / resume -------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_the_same_vectors(tiny, tmp_path, task):
    model = _model("M4", tiny, output_tokens=text_tokens(TEXTS))
    with torch.no_grad():
        model.image_head.vocab_proj.bias.add_(0.5)  # a change that only a saved file can carry
    model.save_pretrained(tmp_path / "m4")
    loaded = SuggestBiEncoder.from_pretrained(tmp_path / "m4")
    assert loaded.config == model.config
    vecs = task.image_vectors[:3]
    docs = task.document_texts()[:3]
    assert (loaded.encode_queries(TEXTS) != model.encode_queries(TEXTS)).nnz == 0
    assert (loaded.encode_documents(docs, vecs) != model.encode_documents(docs, vecs)).nnz == 0
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SuggestBiEncoder.from_pretrained(tmp_path / "nothing")


class _Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny, tmp_path, task):
    pairs = task.subset("train").training_pairs()
    pairs = SuggestPairs(pairs.queries[:24], pairs.captions[:24], pairs.image_vectors[:24])
    cfg = BiEncoderTrainConfig(epochs=2, batch_size=8)
    whole = _model("M4", tiny)
    BiEncoderTrainer(cfg, progress=False).fit(whole, pairs)

    def kill(event, info):
        if event == "epoch" and info["epoch"] == 1:
            raise _Killed

    first = _model("M4", tiny)
    with pytest.raises(_Killed):
        BiEncoderTrainer(cfg, checkpoint_dir=tmp_path, callbacks=[kill], progress=False).fit(first, pairs)
    resumed = _model("M4", tiny)
    history = BiEncoderTrainer(cfg, checkpoint_dir=tmp_path, progress=False).fit(resumed, pairs).history
    assert [h["epoch"] for h in history] == [1, 2]
    for key, value in whole.head_state().items():
        assert torch.allclose(resumed.head_state()[key], value, atol=1e-6), key
    with pytest.raises(ValueError, match="other settings"):
        BiEncoderTrainer(BiEncoderTrainConfig(epochs=3, batch_size=8), checkpoint_dir=tmp_path).fit(
            _model("M4", tiny), pairs
        )


# -- the presets train, index and retrieve --------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_trains_one_epoch_and_its_documents_are_searchable(tiny, tmp_path, task, name):
    from pyterrier_d2s.index import D2SIndex
    from pyterrier_d2s.suggest.pipeline import SuggestModel

    train = task.subset("train").training_pairs()
    pairs = SuggestPairs(train.queries[:32], train.captions[:32], train.image_vectors[:32])
    model = _model(name, tiny, output_tokens=text_tokens(pairs.queries + pairs.captions))
    before = {k: v.clone() for k, v in model.head_state().items()}
    history = BiEncoderTrainer(BiEncoderTrainConfig(epochs=1, batch_size=16), progress=False).fit(
        model, pairs
    )
    assert len(history.history) == 1 and np.isfinite(history.history[0]["loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.head_state().items())
    suggest = SuggestModel(model)
    test = task.subset("test")
    docs = suggest.doc_encoder()(test.documents())
    index = D2SIndex(tmp_path / "idx", verbose=False)
    index.indexer(overwrite=True).index(docs[["docno", "toks"]].to_dict("records"))
    results = (suggest.query_encoder() >> index.retriever(num_results=5))(test.topics())
    assert len(results) and set(results["docno"]) <= set(test.image_ids)


# -- the task and the demo ------------------------------------------------------------------------------------
def test_coco500_task_queries_are_not_in_their_documents(task):
    assert len(task) == 500 and sorted(set(task.split)) == ["test", "train", "val"]
    assert len(task.subset("test")) == 50
    assert all(len(c) == 4 for c in task.captions)
    for q, caps in zip(task.queries, task.captions, strict=True):
        assert " ".join(q.split()) not in [" ".join(c.split()) for c in caps]


def test_a_vectors_dir_with_one_caption_per_image_is_refused(tmp_path):
    import shutil

    from pyterrier_d2s.data import DataError, packaged_path

    for f in ("images.jsonl", "image_vectors.npy", "captions.jsonl", "caption_vectors.npy"):
        shutil.copy(packaged_path("coco500") / f, tmp_path / f)
    with pytest.raises(DataError, match="has one caption"):
        build_task(tmp_path)


def test_demo_script_prints_every_system_as_json(tiny, tmp_path, capsys):
    script = _script()
    argv = ["--demo", "--small", "--backbone", tiny, "--out", str(tmp_path), "--threads", "1"]
    assert script.main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in rows] == ["M1", "M2", "M3", "M4", "bm25", "dense", "d2s"]
    for r in rows:
        assert {"nDCG@10", "RR@10", "R@1", "R@10", "flops", "train_seconds"} <= set(r)
        assert 0 <= r["R@1"] <= r["R@10"] <= 1
    dense = next(r for r in rows if r["name"] == "dense")
    assert dense["R@1"] == pytest.approx(
        0.86, abs=1e-9
    )  # coco500's README: dense R@1 over the 50 test images


def _script():
    spec = importlib.util.spec_from_file_location(
        "image_suggestion", ROOT / "examples" / "image_suggestion.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_frames_become_one_pair_per_relevant_document(task):
    topics, docs, qrels = task.topics(), task.documents(), task.qrels()
    qrels = qrels.iloc[::-1]  # order must not matter: each document keeps its own query
    frames = _script().task_from_frames(topics.drop(columns="query_vec"), docs.drop(columns="doc_vec"), qrels)
    assert len(frames) == 500 and (frames.split == "test").sum() == 50 and (frames.split == "val").sum() == 50
    by_doc = dict(zip(task.image_ids, task.queries, strict=True))
    assert all(by_doc[d] == q for d, q in zip(frames.image_ids, frames.queries, strict=True))


def test_cli_suggest_prints_json_and_names_bad_options(tiny, tmp_path, capsys):
    from pyterrier_d2s.cli import main

    argv = ["suggest", "--backbone", tiny, "--systems", "M3", "bm25", "--epochs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in rows] == ["M3", "bm25"]
    assert main(["suggest", "--data", str(tmp_path / "missing")]) == 2
    assert "no data at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["suggest", "--systems", "M7"])
    assert "invalid choice: 'M7'" in capsys.readouterr().err


def test_a_finetuned_backbone_trains_and_is_saved_with_the_model(tiny, tmp_path, task):
    train = task.subset("train").training_pairs()
    pairs = SuggestPairs(train.queries[:16], train.captions[:16])
    model = _model("M3", tiny, frozen=False)
    before = model.backbone.embeddings.word_embeddings.weight.detach().clone()
    BiEncoderTrainer(BiEncoderTrainConfig(epochs=1, batch_size=8, lr_backbone=1e-2), progress=False).fit(
        model, pairs
    )
    assert not torch.equal(before, model.backbone.embeddings.word_embeddings.weight.detach())
    model.save_pretrained(tmp_path / "m3")
    loaded = SuggestBiEncoder.from_pretrained(tmp_path / "m3")
    assert loaded.config.backbone_saved
    assert (loaded.encode_queries(TEXTS) != model.encode_queries(TEXTS)).nnz == 0


def test_a_missing_backbone_directory_is_named(tmp_path):
    from pyterrier_d2s.suggest.encoders import load_backbone

    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_backbone(str(tmp_path / "no-model"))


def test_frames_without_vectors_run_the_text_systems(tiny, tmp_path, task):
    from pyterrier_d2s.suggest.experiment import SuggestSettings

    script = _script()
    settings = SuggestSettings(backbone=tiny, train=BiEncoderTrainConfig(epochs=1))
    topics, docs = task.topics().drop(columns="query_vec"), task.documents().drop(columns="doc_vec")
    rows = script.run_on_frames(topics, docs, task.qrels(), str(tmp_path), settings)
    assert [r["name"] for r in rows] == ["M2", "M3", "bm25"]
    assert next(r for r in rows if r["name"] == "bm25")["R@1"] > 0.5  # captions share words with the query


class _HashEncoder:
    """A stand-in dense encoder: a fixed random unit vector per distinct input (bytes or text)."""

    dim = 8

    def _vec(self, key) -> np.ndarray:
        seed = int.from_bytes(
            hashlib.sha256(key if isinstance(key, bytes) else key.encode()).digest()[:4], "little"
        )
        v = np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_images_with_ids(self, images, ids, on_error="raise"):
        from pyterrier_d2s.encoders.base import ImageVectors

        return ImageVectors(list(ids), np.stack([self._vec(b) for b in images]))

    def encode_text(self, texts):
        return np.stack([self._vec(t) for t in texts])


def test_atomic_path_trains_on_train_pairs_and_evaluates_validation_with_negatives(tiny, tmp_path):
    import argparse

    from test_atomic import _write_copy

    from pyterrier_d2s.data.atomic import read_image_bytes

    root = _write_copy(tmp_path / "atomic")
    script, encoder = _script(), _HashEncoder()
    topics, docs, qrels = script.atomic_frames(root, "validation", 2, encoder, seed=0)
    assert sorted(docs["docno"]) == ["img-001", "img-002", "img-003", "img-004"]  # 2 judged + 2 unjudged
    images = read_image_bytes(root, list(docs["docno"]))
    for docno, vec in zip(docs["docno"], docs["doc_vec"], strict=True):
        np.testing.assert_array_equal(vec, encoder._vec(images[docno]))
    for query, vec in zip(topics["query"], topics["query_vec"], strict=True):
        np.testing.assert_array_equal(vec, encoder._vec(query))
    args = argparse.Namespace(
        atomic_dir=root,
        train_pairs=None,
        negatives=2,
        seed=0,
        systems=None,
        clip=None,
        small=True,
        epochs=1,
        batch_size=8,
        backbone=tiny,
        finetune=False,
        d2s_epochs=None,
        progress=False,
        out=str(tmp_path / "run"),
    )
    rows = {r["name"]: r for r in script.run_atomic(args, encoder=encoder)}
    assert list(rows) == ["M1", "M2", "M3", "M4", "bm25", "dense"]
    assert rows["bm25"]["R@1"] == 1.0  # "coffee" and "cat" each match only their own image's captions
    # dense R@1 by brute force over the four images, judged queries only
    judged = topics[topics["qid"].isin(qrels["qid"])]
    d = np.stack(docs["doc_vec"].to_numpy())
    relevant = dict(zip(qrels["qid"], qrels["docno"], strict=True))
    hits = [
        docs["docno"][int(np.argmax(d @ v))] == relevant[q]
        for q, v in zip(judged["qid"], judged["query_vec"], strict=True)
    ]
    assert rows["dense"]["R@1"] == pytest.approx(np.mean(hits))


def test_checkpoints_from_before_the_distributed_settings_still_resume():
    from dataclasses import asdict

    from pyterrier_d2s.suggest.trainer import _settings

    new = asdict(BiEncoderTrainConfig())
    old = {k: v for k, v in new.items() if k not in ("negatives", "dropout")}  # written before they existed
    assert _settings(old) == _settings(new)
    assert _settings({**new, "negatives": "local"}) != _settings(new)
    with pytest.raises(ValueError, match="negatives must be one of"):
        BiEncoderTrainConfig(negatives="both")


def test_a_finetuned_backbone_without_dropout_draws_nothing_from_the_global_generator(tiny, task):
    """``dropout=False``: the run does not depend on torch's global generator, the one per-rank source of
    randomness under torchrun, so a fine-tuned run is the same on any number of ranks."""
    train = task.subset("train").training_pairs()
    pairs = SuggestPairs(train.queries[:16], train.captions[:16])
    states = []
    for seed, dropout in [(1, False), (2, False), (2, True)]:
        model = _model("M3", tiny, frozen=False)
        torch.manual_seed(seed)  # what differs between ranks
        cfg = BiEncoderTrainConfig(epochs=1, batch_size=8, lr_backbone=1e-2, dropout=dropout)
        BiEncoderTrainer(cfg, progress=False).fit(model, pairs)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])  # dropout on: it does draw
