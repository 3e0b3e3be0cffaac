"""The image-suggestion bi-encoder: a query encoder and a document encoder over one vocabulary.

:class:`SuggestBiEncoder` holds one ``transformers`` backbone shared by the query and caption sides (with a
frozen backbone both sides see the same token states, so sharing it costs nothing and halves the memory), a
term-weight head per text side (:mod:`.encoders`) and, for presets with images, the D2S head that maps a
dense image vector to the vocabulary. Its outputs are |V|-wide non-negative vectors aligned with
:class:`pyterrier_d2s.vocab.Vocabulary`, so they go into a :class:`~pyterrier_d2s.index.D2SIndex` like any
D2S document. Saved as ``config.json`` + ``model.safetensors`` (the heads; the backbone too under
``backbone/`` when it was fine-tuned). No PyTerrier here; :mod:`.pipeline` wraps it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..head import D2SHead, D2SHeadConfig
from ..vocab import Vocabulary
from .encoders import (
    MLMTermWeights,
    MLPTermWeights,
    TokenStates,
    backbone_source,
    checkpoint_mlm_head,
    load_backbone,
    tokenize,
)
from .presets import Preset, preset

__all__ = ["SuggestBiEncoder", "SuggestConfig", "dense_to_csr", "text_tokens"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONE_DIR = "backbone"


@dataclass
class SuggestConfig:
    """What a bi-encoder is: its preset's encoders, backbone, image width and text settings."""

    preset: str
    query: str
    caption: str | None
    image: bool
    backbone: str | None = None  # Hub name or directory; None: the offline all-MiniLM-L6-v2
    image_dim: int | None = None  # width of the dense image vectors (presets with images)
    pooling: str = "max"  # of the MLM text encoders: "max" or "sum"
    max_length: int = 128
    frozen: bool = True  # backbone frozen (only the heads train)
    backbone_saved: bool = False  # the fine-tuned backbone is in the model directory
    # vocabulary ids the expanding encoders (MLM text, image) may output; None: every non-special token.
    # The demo restricts them to the tokens of the training texts (see :func:`text_tokens`), ~10x less work.
    output_tokens: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_preset(cls, name: str | Preset, **kwargs: Any) -> SuggestConfig:
        """The config of preset ``name`` (``M1``...``M4``) with ``kwargs`` set."""
        p = preset(name) if isinstance(name, str) else name
        return cls(preset=p.name, query=p.query, caption=p.caption, image=p.image, **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SuggestConfig:
        unknown = set(d) - set(cls.__dataclass_fields__) - {"type"}
        if unknown:
            raise ValueError(f"unknown keys in image-suggestion config: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k != "type"})


def text_tokens(texts: list[str], vocab: Vocabulary | None = None) -> list[int]:
    """The sorted non-special vocabulary ids occurring in ``texts`` (an output vocabulary for training)."""
    ids = (vocab or Vocabulary()).token_ids(texts)
    return sorted({int(i) for row in ids for i in row})


def dense_to_csr(weights: torch.Tensor) -> sp.csr_matrix:
    """A (n, |V|) tensor as float32 CSR with only its positive entries."""
    w = weights.detach().float().cpu().numpy()
    w[w <= 0] = 0
    return sp.csr_matrix(w)


class SuggestBiEncoder(nn.Module):
    """Query and document encoders of one preset (see :mod:`.presets`).

    Args:
        config: the model's config.
        backbone: ``(tokenizer, model)`` already loaded (default: loaded from ``config.backbone``).
        init_from_checkpoint: start an MLM text head from the checkpoint's own MLM head when it has one
            (off when loading a trained model: its weights replace the initialisation anyway).
    """

    def __init__(self, config: SuggestConfig, backbone=None, init_from_checkpoint: bool = True):
        super().__init__()
        if config.image and not config.image_dim:
            raise ValueError(f"preset {config.preset} encodes images: give image_dim (the image vectors' width)")
        self.config = config
        source = backbone_source(config.backbone)
        self.tokenizer, self.backbone = backbone if backbone is not None else load_backbone(source)
        self.vocab = Vocabulary(source)
        hidden = int(self.backbone.config.hidden_size)
        if len(self.vocab) != self.backbone.get_input_embeddings().weight.shape[0]:
            raise ValueError(
                f"backbone {source}: {self.backbone.get_input_embeddings().weight.shape[0]} word embeddings for "
                f"a vocabulary of {len(self.vocab)} tokens"
            )
        embeddings = self.backbone.get_input_embeddings().weight.detach().float().clone()
        mlm = checkpoint_mlm_head(source)[0] if init_from_checkpoint else None
        self.query_head = self._text_head(config.query, hidden, embeddings, mlm)
        self.caption_head = self._text_head(config.caption, hidden, embeddings, mlm) if config.caption else None
        self.image_head = self._image_head(hidden, embeddings) if config.image else None
        self.backbone.requires_grad_(not config.frozen)

    def _text_head(self, kind: str, hidden: int, embeddings: torch.Tensor, mlm) -> nn.Module:
        special = self.vocab.special_mask
        if kind == "mlp":
            return MLPTermWeights(hidden, len(self.vocab), special)
        return MLMTermWeights(
            hidden, special, self.config.pooling, weights=mlm, embeddings=embeddings, columns=self._columns()
        )

    def _columns(self) -> np.ndarray | None:
        tokens = self.config.output_tokens
        return None if tokens is None else np.asarray(tokens, dtype=np.int64)

    def _image_head(self, hidden: int, embeddings: torch.Tensor) -> D2SHead:
        cfg = D2SHeadConfig(input_dim=int(self.config.image_dim), hidden_dim=hidden, vocab_size=len(self.vocab))
        head = D2SHead(cfg, vocab=self.vocab, embeddings=embeddings)
        head.set_output_tokens(self._columns())
        return head

    # -- encoding --------------------------------------------------------------------------------------
    def tokens(self, texts: list[str]) -> TokenStates:
        """``texts`` tokenised for this model (without states)."""
        return tokenize(self.tokenizer, texts, self.config.max_length)

    def _states(self, tokens: TokenStates) -> torch.Tensor:
        if tokens.states is not None and self.config.frozen:
            return tokens.states.to(self.device)
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        return self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state

    def _text(self, head: nn.Module, tokens: TokenStates) -> torch.Tensor:
        states = self._states(tokens)
        return head(states, tokens.input_ids.to(states.device), tokens.attention_mask.to(states.device))

    def query_weights(self, tokens: TokenStates) -> torch.Tensor:
        """(B, |V|) query vectors of tokenised queries."""
        return self._text(self.query_head, tokens)

    def document_weights(self, tokens: TokenStates | None, image_vectors: torch.Tensor | None) -> torch.Tensor:
        """(B, |V|) document vectors: caption vector, image vector, or their sum (M4; see :mod:`.presets`)."""
        parts = []
        if self.caption_head is not None:
            if tokens is None:
                raise ValueError(f"preset {self.config.preset} needs the documents' caption text")
            parts.append(self._text(self.caption_head, tokens))
        if self.image_head is not None:
            if image_vectors is None:
                raise ValueError(f"preset {self.config.preset} needs the documents' image vectors (doc_vec)")
            parts.append(self.image_head(image_vectors.to(self.device).float()))
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode_queries(self, texts: list[str], batch_size: int = 64) -> sp.csr_matrix:
        """Sparse query vectors (CSR, n x |V|)."""
        self.eval()
        rows = [self.query_weights(self.tokens(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return sp.vstack([dense_to_csr(r) for r in rows]).tocsr() if rows else sp.csr_matrix((0, len(self.vocab)))

    @torch.no_grad()
    def encode_documents(
        self, captions: list[str] | None = None, image_vectors: np.ndarray | None = None, batch_size: int = 64
    ) -> sp.csr_matrix:
        """Sparse document vectors (CSR, n x |V|) from caption texts and/or dense image vectors."""
        self.eval()
        n = len(captions) if captions is not None else len(image_vectors)
        out = []
        for i in range(0, n, batch_size):
            tokens = None if captions is None else self.tokens(captions[i : i + batch_size])
            vecs = None if image_vectors is None else torch.as_tensor(np.asarray(image_vectors[i : i + batch_size]))
            out.append(dense_to_csr(self.document_weights(tokens, vecs)))
        return sp.vstack(out).tocsr() if out else sp.csr_matrix((0, len(self.vocab)))

    # -- saving ----------------------------------------------------------------------------------------
    def head_state(self) -> dict[str, torch.Tensor]:
        """The weights that training changes besides a frozen backbone (every head's state)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` (and ``backbone/`` when it was fine-tuned)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = SuggestConfig(**asdict(self.config))
        if not config.frozen:
            self.backbone.save_pretrained(directory / BACKBONE_DIR)
            self.tokenizer.save_pretrained(directory / BACKBONE_DIR)
            config.backbone_saved = True
        state = {k: v.detach().cpu().contiguous() for k, v in self.head_state().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        text = json.dumps({"type": "image_suggestion", **asdict(config)}, indent=2)
        (directory / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> SuggestBiEncoder:
        """Load a model written by :meth:`save_pretrained` (no pickle: JSON + safetensors)."""
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no {CONFIG_NAME} of an image-suggestion model")
        config = SuggestConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
        if config.backbone_saved:
            config.backbone = str(directory / BACKBONE_DIR)
        model = cls(config, init_from_checkpoint=False)
        missing, unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise ValueError(f"{directory / WEIGHTS_NAME}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model.to(device).eval()
