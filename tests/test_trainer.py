import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import write_unsplit_vectors_dir

from pyterrier_d2s.data import DataError
from pyterrier_d2s.data.synthetic import random_pairs
from pyterrier_d2s.training import D2STrainer, TrainConfig
from pyterrier_d2s.training.checkpoint import CHECKPOINT_NAME
from pyterrier_d2s.training.compact_head import TokenRows
from pyterrier_d2s.vocab import ids_to_csr


def small_config(**over):
    cfg = dict(exp="c+w", eta=1e-3, epochs=4, batch_size=16, hidden_dim=16, init="random", seed=7)
    cfg.update(over)
    return TrainConfig(**cfg)


class Kill(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(tmp_path, vocab):
    torch.set_num_threads(1)
    data = random_pairs()
    full = D2STrainer(small_config(), vocab=vocab, checkpoint_dir=tmp_path / "a", progress=False).fit(data)

    def die(event, info):
        if event == "step" and info["epoch"] == 2 and info["step"] == 1:
            raise Kill  # mid-epoch: the half-done epoch must be redone from the checkpoint

    with pytest.raises(Kill):
        D2STrainer(
            small_config(), vocab=vocab, checkpoint_dir=tmp_path / "b", callbacks=[die], progress=False
        ).fit(data)
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["epoch"] == 2
    resumed = D2STrainer(small_config(), vocab=vocab, checkpoint_dir=tmp_path / "b", progress=False).fit(data)

    assert resumed.best_epoch == full.best_epoch and resumed.best_r1 == full.best_r1
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for (name, a), (_, b) in zip(
        full.head.state_dict().items(), resumed.head.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_of_other_settings_is_refused(tmp_path, vocab):
    data = random_pairs()
    D2STrainer(small_config(epochs=1), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(data)
    with pytest.raises(ValueError, match=r"other settings \(eta 0.001 -> 0.5\)"):
        D2STrainer(small_config(epochs=1, eta=0.5), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(
            data
        )


def test_history_schedule_and_best_head(vocab):
    data = random_pairs()
    res = D2STrainer(small_config(epochs=5, select_from=0.4), vocab=vocab, progress=False).fit(data)
    # p_c reaches 1 in the final epoch (the paper's text), in steps of 1/(epochs - 1)
    assert [h["p_c"] for h in res.history] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    # eligible: epochs 3..5 (select_from 0.4 of 5 epochs = 2, and the L1 warm-up of 0.2 * 5 = 1 epoch is over)
    eligible = [h for h in res.history if h["epoch"] >= 3]
    best = max(eligible, key=lambda h: (h["mrr"], h["epoch"]))
    assert res.best_epoch == best["epoch"] and res.best_r1 == best["r1"]
    assert res.head.config.extra["best_epoch"] == res.best_epoch
    assert res.head.config.extra["select_from"] == 0.4
    for h in res.history:
        assert 0 <= h["r1"] <= h["mrr"] + 1e-12 <= 1 + 1e-12 and h["flops"] >= 0 and h["q_nnz"] >= 0


def test_bad_inputs_are_reported(vocab):
    data = random_pairs()
    data.caption_vectors[3, 0] = np.nan
    with pytest.raises(DataError, match="caption 'c3' has a NaN or inf vector"):
        D2STrainer(small_config(), vocab=vocab, progress=False).fit(data)
    data = random_pairs()
    data.caption_vectors = data.caption_vectors[:, :5]
    with pytest.raises(DataError, match="dimension mismatch"):
        D2STrainer(small_config(), vocab=vocab, progress=False).fit(data)
    data = random_pairs()
    data.caption_image[5] = 99
    with pytest.raises(DataError, match="caption 'c5' points to an unknown image"):
        D2STrainer(small_config(), vocab=vocab, progress=False).fit(data)
    data = random_pairs()
    data.caption_texts[2] = ""
    with pytest.raises(DataError, match="caption 'c2' has empty text"):
        D2STrainer(small_config(), vocab=vocab, progress=False).fit(data)
    with pytest.raises(ValueError, match="exp must be one of"):
        TrainConfig(exp="2")
    for name in ("eta", "lr_vocab", "lr_proj", "tau"):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            TrainConfig(**{name: float("nan")})
    with pytest.raises(ValueError, match="recipe must be one of"):
        TrainConfig(recipe="coco500")
    with pytest.raises(ValueError, match="output_vocab"):
        TrainConfig(output_vocab="words")


def test_resume_onto_other_data_of_the_same_shape_is_refused(tmp_path, vocab):
    data = random_pairs()
    D2STrainer(small_config(epochs=1), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(data)
    other = random_pairs()
    other.caption_vectors = other.caption_vectors[::-1].copy()  # same sizes, other pairs
    with pytest.raises(ValueError, match="other training data .same sizes, other ids, vectors or texts"):
        D2STrainer(small_config(epochs=1), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(other)
    renamed = random_pairs()
    renamed.image_ids[0] = "another-id"
    with pytest.raises(ValueError, match="other training data"):
        D2STrainer(small_config(epochs=1), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(renamed)
    bigger = random_pairs(n_images=30)
    with pytest.raises(ValueError, match="images 24 -> 30, captions 48 -> 60"):
        D2STrainer(small_config(epochs=1), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(bigger)


def test_corrupt_checkpoint_gives_a_hint(tmp_path, vocab):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint.*delete it"):
        D2STrainer(small_config(epochs=1), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(
            random_pairs()
        )


def test_output_vocab_captions_restricts_the_head_to_training_caption_tokens(tmp_path, vocab):
    data = random_pairs()
    res = D2STrainer(small_config(epochs=2, output_vocab="captions"), vocab=vocab, progress=False).fit(data)
    allowed = set(np.concatenate(vocab.token_ids(data.caption_texts)).tolist())
    assert res.head.output_vocab_size == len(allowed) == res.head.config.extra["output_tokens"]
    out = res.head.encode(np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32))
    assert set(out.indices.tolist()) <= allowed
    # the restriction is saved with the weights
    res.head.save_pretrained(tmp_path / "h")
    from pyterrier_d2s.head import D2SHead

    loaded = D2SHead.from_pretrained(tmp_path / "h")
    assert loaded.output_vocab_size == len(allowed)
    z = torch.from_numpy(data.image_vectors)
    torch.testing.assert_close(loaded(z), res.head(z))


def test_output_vocab_caption_words_drops_word_pieces(vocab):
    data = random_pairs()
    data.caption_texts[0] = "a xylophonist dog"  # WordPiece splits the rare word into pieces
    trainer = D2STrainer(small_config(output_vocab="caption-words"), vocab=vocab, progress=False)
    own = ids_to_csr(vocab.token_ids(data.caption_texts), len(vocab))
    cols = trainer.output_columns(trainer.resolve(data), own)
    tokens = set(vocab.decode(cols))
    expected = {
        t for ids in vocab.token_ids(data.caption_texts) for t in vocab.decode(ids) if not t.startswith("##")
    }
    assert tokens == expected and any(
        t.startswith("##") for ids in vocab.token_ids(["xylophonist"]) for t in vocab.decode(ids)
    )


def test_training_head_equals_the_full_head_on_its_columns(vocab):
    """The compact head used for training computes exactly the full head's weights on its columns."""
    from pyterrier_d2s.training.compact_head import TrainingHead

    trainer = D2STrainer(small_config(), vocab=vocab, progress=False)
    head = trainer.new_head(8)
    with torch.no_grad():
        head.vocab_proj.bias.normal_(0, 1.0)  # many positive logits
    columns = np.sort(
        np.random.default_rng(1).choice(np.flatnonzero(~vocab.special_mask), 300, replace=False)
    )
    compact = TrainingHead(head, columns)
    z = torch.randn(7, 8)
    torch.testing.assert_close(compact(z), head(z)[:, torch.from_numpy(columns)])
    # trained weights go back into the full head's rows; other rows are untouched
    state = {k: v + 0.5 for k, v in compact.state_dict().items()}
    before = head.vocab_proj.weight.detach().clone()
    compact.write_into(head, state)
    torch.testing.assert_close(head.vocab_proj.weight[torch.from_numpy(columns)], state["vocab_proj.weight"])
    others = np.setdiff1d(np.arange(len(vocab)), columns)
    assert torch.equal(head.vocab_proj.weight[others], before[others])
    torch.testing.assert_close(head.proj.weight, state["proj.weight"])


def test_default_recipe_follows_the_data_not_its_name(vocab):
    a = random_pairs(n_images=40)
    b = random_pairs(n_images=40, seed=5)
    b.name = "coco500"
    trainer = D2STrainer(TrainConfig(), vocab=vocab, progress=False)
    assert trainer.resolve(a) == trainer.resolve(b)
    big = random_pairs(n_images=640, captions_per_image=2)
    assert trainer.resolve(big).batch_size == 64  # 1,280 captions / 20 = 64
    # explicit values win over the recipe; recipe="paper" is the published setting
    assert D2STrainer(TrainConfig(epochs=3, lr_vocab=2e-4), vocab=vocab).resolve(a).epochs == 3
    paper = D2STrainer(TrainConfig(recipe="paper"), vocab=vocab).resolve(a)
    assert (paper.epochs, paper.batch_size, paper.lr_vocab, paper.output_vocab) == (200, 512, 5e-5, "all")


def d2s(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pyterrier_d2s.cli", *args], **kw)


def test_cli_killed_run_resumes_to_the_same_head(tmp_path):
    """A real SIGKILL mid-training, then the same command again: same weights as one uninterrupted run."""
    from safetensors.torch import load_file

    data_dir = write_unsplit_vectors_dir(tmp_path / "data", 96)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # all 30,522 output tokens: slow enough (~0.1 s a step) to be killed between two checkpoints; the paper's
    # start, since the text-space start would first embed all 30,522 words (a minute per run, not under test)
    args = ["train", "--data", str(data_dir), "--epochs", "8", "--batch-size", "32", "--output-vocab", "all"]
    args += ["--init", "embeddings"]
    args.append("--quiet")
    ref = d2s(*args, "--out", str(tmp_path / "ref"), env=env, stdout=subprocess.PIPE)
    assert ref.wait(timeout=300) == 0

    proc = d2s(*args, "--out", str(tmp_path / "run"), env=env, stdout=subprocess.DEVNULL)
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch_at_kill = torch.load(ckpt, weights_only=True)["epoch"]
    assert 3 <= epoch_at_kill < 8
    again = d2s(*args, "--out", str(tmp_path / "run"), env=env, stdout=subprocess.PIPE)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["epochs"] == 8
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cli_train_reports_the_paper_numbers(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyterrier_d2s.cli",
            "train",
            "--data",
            "coco500",
            "--exp",
            "1",
            "--epochs",
            "3",
            "--batch-size",
            "128",
            "--lr-vocab",
            "5e-5",
            "--lr-proj",
            "1e-3",
            "--quiet",
            "--out",
            str(tmp_path / "h"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    for key in (
        "dense_r1",
        "sparse_r1",
        "sparse_r5",
        "sparse_mrr10",
        "flops",
        "exact20",
        "semantic20",
        "q_nnz",
        "d_nnz",
        "epochs",
        "seconds",
    ):
        assert key in report, key
    # held out: trained on coco500's 400 training images, reported on its 50 test images (data README)
    assert report["held_out"] is True and report["split"]["n_test"] == 50
    assert report["dense_r1"] == pytest.approx(0.86, abs=1e-3)
    assert report["sparse_r1"] > 0.1  # 5x chance (1/50) after 3 epochs
    # explicit options override the recipe, and the values used are reported
    assert (report["recipe"], report["batch_size"], report["lr_vocab"]) == ("auto", 128, 5e-5)
    assert (tmp_path / "h" / "config.json").is_file() and (tmp_path / "h" / "model.safetensors").is_file()


def test_cli_bad_data_exits_with_message(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyterrier_d2s.cli",
            "train",
            "--data",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no data at" in proc.stderr


def test_token_rows_masks_equal_the_dense_own_token_matrix():
    rng = np.random.default_rng(3)
    token_ids = [rng.choice(50, size=rng.integers(0, 9), replace=False) for _ in range(40)]
    own = ids_to_csr(token_ids, 50)
    rows = torch.tensor([5, 0, 39, 5, 17])
    mask = TokenRows(own, torch.device("cpu")).mask(rows)
    assert mask.shape == (5, 50)
    np.testing.assert_array_equal(mask.numpy(), (own[rows.numpy()].toarray() > 0).astype(np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_training_equals_eager_training(vocab):
    data = random_pairs(n_images=64)  # 128 captions, batch 24: 5 full batches and a short one per epoch
    runs = {
        graph: D2STrainer(
            small_config(batch_size=24, epochs=3, cuda_graph=graph, candidates="batch"),  # graphed
            vocab=vocab,
            device="cuda",
            progress=False,
        ).fit(data)
        for graph in (False, True)
    }
    eager, graphed = runs[False], runs[True]
    assert [h["r1"] for h in graphed.history] == [h["r1"] for h in eager.history]
    np.testing.assert_allclose(
        [h["loss"] for h in graphed.history], [h["loss"] for h in eager.history], rtol=1e-5
    )
    for (name, a), (_, b) in zip(
        eager.head.state_dict().items(), graphed.head.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_pca_init_projects_onto_the_principal_directions():
    from pyterrier_d2s.training.compact_head import pca_init_

    rng = np.random.default_rng(0)
    # 3 directions of decreasing spread in 6-d, plus an offset
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :3].T
    z = (rng.normal(size=(200, 3)) * [5.0, 2.0, 0.5]) @ basis + 3.0
    proj = torch.nn.Linear(6, 4)
    pca_init_(proj, z)
    w = proj.weight.detach().double().numpy()
    # rows 0-2 span the data's directions in order of variance (up to sign), row 3 (past the rank) is zero
    for i in range(3):
        assert abs(abs(w[i] @ basis[i]) - 1) < 0.05
    np.testing.assert_allclose(w[3], 0, atol=1e-6)
    # the projection centres the data: mean output 0, and per-coordinate variance in decreasing order
    out = proj(torch.from_numpy(z).float()).detach().numpy()
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-3)
    var = out.var(0)
    assert var[0] > var[1] > var[2] > var[3] - 1e-9


def test_proj_init_pca_is_recorded_and_validated(vocab):
    res = D2STrainer(small_config(epochs=1, proj_init="pca"), vocab=vocab, progress=False).fit(random_pairs())
    assert res.head.config.extra["proj_init"] == "pca"
    with pytest.raises(ValueError, match="proj_init"):
        TrainConfig(proj_init="svd")


def test_checkpoint_format_and_training_state_round_trip(tmp_path, vocab):
    from pyterrier_d2s.training.checkpoint import TrainingState

    res = D2STrainer(small_config(epochs=2), vocab=vocab, checkpoint_dir=tmp_path, progress=False).fit(
        random_pairs()
    )
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    # the checkpoint format of the releases before the trainer was split: the same keys, so old runs resume
    assert set(ckpt) == {
        "epoch",
        "head",
        "optimizer",
        "generator",
        "mask_generator",
        "best_score",
        "best_epoch",
        "best_state",
        "history",
        "config",
        "fingerprint",
    }
    assert ckpt["epoch"] == 2 and ckpt["history"] == res.history and ckpt["best_epoch"] == res.best_epoch
    assert ckpt["config"] == dataclasses.asdict(res.config)
    head = torch.nn.Linear(1, 1)
    head.load_state_dict = lambda sd: None  # the state's own fields are what this checks
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    optimizer.load_state_dict = lambda sd: None
    generator, mask_generator = torch.Generator(), torch.Generator()
    state = TrainingState.restore(ckpt, head, optimizer, generator, mask_generator)
    assert (state.epoch, state.best_score, state.best_epoch) == (2, ckpt["best_score"], res.best_epoch)
    assert torch.equal(generator.get_state(), ckpt["generator"])
    assert state.history == res.history and state.best_state.keys() == ckpt["best_state"].keys()
