"""The Hugging Face Hub: where a pretrained head's files come from, how a head is pushed, and its model card.

:func:`resolve_pretrained` turns ``name_or_dir`` into a local directory: an existing directory as it is, a Hub
id (``org/name``) through ``huggingface_hub.snapshot_download`` (its cache, ``HF_HUB_CACHE``, and
``HF_HUB_OFFLINE=1``: nothing is fetched, the cached snapshot is used). :func:`push_folder` uploads a directory
written by ``save_pretrained`` plus a model card (:func:`model_card`) to a Hub repository.

Environment variables are read when a head is loaded (not only when ``huggingface_hub`` is first imported), so
setting ``HF_HUB_OFFLINE`` / ``HF_HUB_CACHE`` in a running process takes effect.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MODEL_CARD_NAME", "hub_offline", "model_card", "push_folder", "resolve_pretrained"]

MODEL_CARD_NAME = "README.md"

# A Hub model id as this package takes one: ``org/name`` (letters, digits, ``-``, ``_``, ``.``). A bare ``name``
# (legacy Hub ids) is taken for a local path, so that a mistyped directory is never looked up on the Hub.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

# What a head's snapshot may hold; a repository's other files (e.g. training logs) are not fetched.
_HEAD_FILES = ["*.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "*.md"]

# The training values a model card lists as the recipe, when the head's config ``extra`` records them.
_RECIPE_KEYS = (
    "exp",
    "eta",
    "lam",
    "tau",
    "epochs",
    "batch_size",
    "lr_proj",
    "lr_vocab",
    "warmup_ratio",
    "output_vocab",
    "caption_draw",
    "own_terms",
    "init",
    "regulariser",
    "seed",
    "best_epoch",
)
# The held-out numbers ``d2s train`` records in ``extra["test"]`` that a model card reports.
_HELD_OUT_KEYS = (
    "held_out",
    "dense_r1",
    "sparse_r1",
    "sparse_r5",
    "sparse_mrr10",
    "flops",
    "exact20",
    "semantic20",
    "q_nnz",
    "d_nnz",
)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was when the hub was imported."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any(f is not None and f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags) or bool(
        constants.HF_HUB_OFFLINE
    )


def _is_local_path(name: str) -> bool:
    """Whether ``name`` can only be meant as a path: it exists, or it is not shaped like ``org/name``."""
    return Path(name).exists() or name.startswith((".", "/", "~")) or not _REPO_ID.match(name)


def resolve_pretrained(name_or_dir: str | os.PathLike, revision: str | None = None) -> Path:
    """The local directory holding the files of ``name_or_dir``: a directory, or a Hub id's snapshot.

    Args:
        name_or_dir: a directory, or a Hub model id (``org/name``) fetched into (or found in) the Hub cache.
        revision: a branch, tag or commit of the Hub repository (default ``main``); only for Hub ids.

    Raises:
        FileNotFoundError: a missing directory, a repository or revision that does not exist, or, offline, one
            that is not in the cache (the message says which and where it looked).
    """
    name = os.fspath(name_or_dir)
    if _is_local_path(name):
        if revision is not None:
            raise ValueError(f"revision={revision!r} is for Hub ids; {name} is a local path")
        return Path(name)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = os.environ.get("HF_HUB_CACHE") or None
    offline = hub_offline()
    at = f"{name}@{revision}" if revision else name
    try:
        path = snapshot_download(
            name, revision=revision, cache_dir=cache, local_files_only=offline, allow_patterns=_HEAD_FILES
        )
    except LocalEntryNotFoundError as e:
        where = cache or "the default Hub cache"
        why = "HF_HUB_OFFLINE is set and it is not" if offline else "it could not be fetched and is not"
        raise FileNotFoundError(f"{at}: no such directory, and {why} in {where}") from e
    except HfHubHTTPError as e:  # RepositoryNotFoundError, RevisionNotFoundError, ... are subclasses
        raise FileNotFoundError(f"{at}: not found on the Hub ({type(e).__name__})") from e
    return Path(path)


def _table(values: dict[str, Any]) -> list[str]:
    rows = ["| | |", "|---|---|"]
    return rows + [f"| {k} | {v} |" for k, v in values.items()]


def model_card(repo_id: str, config: dict[str, Any]) -> str:
    """A Hub model card (``README.md`` with YAML front matter) for a head whose ``asdict(config)`` is given:
    its shape, what it was trained on, the recipe and the held-out numbers its config's ``extra`` records."""
    extra = dict(config.get("extra") or {})
    test = dict(extra.get("test") or {})
    data = test.get("data") or extra.get("trained_on") or "not recorded"
    recipe = {k: test.get(k, extra.get(k)) for k in _RECIPE_KEYS if test.get(k, extra.get(k)) is not None}
    held_out = {k: test[k] for k in _HELD_OUT_KEYS if test.get(k) is not None}
    lines = [
        "---",
        "library_name: pyterrier-d2s",
        "tags: [pyterrier, learned-sparse-retrieval, multimodal, d2s]",
        "---",
        f"# {repo_id}",
        "",
        "A Dense2Sparse (D2S) head (Nguyen et al., ECIR 2024, arXiv 2402.17535) for pyterrier-d2s: it maps "
        f"{config.get('input_dim')}-d dense vectors of `{config.get('dense_encoder') or 'a dense model'}` "
        f"onto the {config.get('vocab_size')}-token WordPiece vocabulary (hidden size {config.get('hidden_dim')}).",
        "",
        "```python",
        "from pyterrier_d2s import D2S",
        f'model = D2S.from_pretrained("{repo_id}")',
        "```",
        "",
        f"## Training data\n\n{data}",
        "",
        "## Recipe",
        "",
        *(_table(recipe) if recipe else ["not recorded"]),
        "",
        "## Held-out results",
        "",
        *(_table(held_out) if held_out else ["not recorded (the head was not saved by `d2s train`)"]),
        "",
    ]
    return "\n".join(lines)


def push_folder(
    write: Callable[[Path], None],
    config: Callable[[], dict[str, Any]],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload D2S head",
    api: Any | None = None,
) -> Any:
    """Write a head with ``write(directory)``, add its model card (from ``config()``, read after writing) and
    upload the directory to ``repo_id`` (created if missing); returns the upload's commit info.

    ``api``: an object with ``create_repo`` and ``upload_folder`` like :class:`huggingface_hub.HfApi`
    (default: one with ``token``).
    """
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="d2s-push-") as tmp:
        folder = Path(tmp)
        write(folder)
        (folder / MODEL_CARD_NAME).write_text(model_card(repo_id, config()), encoding="utf-8")
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision
        )
