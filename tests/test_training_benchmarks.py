"""benchmarks/heldout_folds.py and benchmarks/phenomena.py: the planted data (pyterrier_d2s.data.synthetic) are
what they claim, and both scripts run end to end with the agreed JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pyterrier_d2s.data.synthetic import FUNCTION_WORDS, planted_pairs

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import heldout_folds  # noqa: E402
import phenomena  # noqa: E402


def test_planted_pairs_name_only_planted_words(vocab):
    data, planted = planted_pairs(vocab, 40, captions_per_image=2, n_concepts=30, seed=3)
    assert len(data.image_ids) == 40 and len(data) == 80
    np.testing.assert_allclose(np.linalg.norm(data.image_vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(data.caption_vectors, axis=1), 1.0, atol=1e-5)
    for text, image_row in zip(data.caption_texts, data.caption_image, strict=True):
        words = text.split()
        content = set(words[1::2])
        assert set(words[0::2]) <= set(FUNCTION_WORDS)
        assert len(content) == 3 and content <= set(planted[image_row])
        # every planted word is one WordPiece token, so it can be an output term as it is
        assert all(len(vocab.token_ids([w])[0]) == 1 for w in content)
    # the dense vectors carry the bags: an image is closer to its own captions than to others on average
    sims = data.caption_vectors @ data.image_vectors.T
    own = sims[np.arange(len(data)), data.caption_image]
    assert own.mean() > sims.mean() + 0.2


class _OracleHead:
    """Scores each image's planted words highest: recovery must be exactly 1."""

    def __init__(self, vocab, planted):
        self.vocab, self.planted = vocab, planted

    def encode(self, vectors):
        import scipy.sparse as sp

        rows, cols, vals = [], [], []
        for r in range(len(vectors)):
            for rank, word in enumerate(self.planted[r]):
                rows.append(r)
                cols.append(self.vocab.token_to_id[word])
                vals.append(2.0 - 0.1 * rank)
            rows.append(r)
            cols.append(self.vocab.token_to_id["zebra"])
            vals.append(0.5)  # a lower-weighted extra term is not in the top len(planted)
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(vectors), len(self.vocab)))


def test_recovery_of_an_oracle_and_of_a_wrong_head(vocab):
    data, planted = planted_pairs(vocab, 12, n_concepts=20, seed=1)
    assert phenomena.recovery(_OracleHead(vocab, planted), data, planted) == 1.0
    shifted = planted[1:] + planted[:1]  # another image's words: overlap only by chance
    assert phenomena.recovery(_OracleHead(vocab, shifted), data, planted) < 0.5


@pytest.mark.slow
def test_benchmarks_run_and_report(capsys):
    report = phenomena.main(["--images", "60", "--modes", "c+w", "0", "--epochs", "2"])
    assert [(r["images"], r["exp"]) for r in report["runs"]] == [(60, "c+w"), (60, "0")]
    for r in report["runs"]:
        assert 0 <= r["recovery"] <= 1 and r["flops"] >= 0 and r["recipe"]["epochs"] == 2
    folds = heldout_folds.main(
        ["--folds", "5", "--only-folds", "0", "1", "--modes", "c+w", "--epochs", "1", "--set", "init=random"]
    )
    assert [r["test_images"] for r in folds["runs"]] == [100, 100]  # 5 folds of coco500's 500 images
    assert folds["overrides"] == {"epochs": 1, "init": "random"}
    cw = folds["summary"]["c+w"]
    assert cw["r1"]["mean"] == pytest.approx(np.mean([r["r1"] for r in folds["runs"]]))
    assert set(folds["targets"]) == {"cw_r1_ge_0.85_dense", "cw_flops_le_20", "cw_exact20_ge_0.15"}
