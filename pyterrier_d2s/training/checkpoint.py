"""Training state and its per-epoch checkpoint: what a killed run resumes from.

A checkpoint is one ``checkpoint.pt`` (a plain dict of tensors and containers, read with
``weights_only=True``), written atomically after every epoch. Its keys: ``epoch`` (epochs finished),
``head`` and ``optimizer`` state dicts, ``generator`` / ``mask_generator`` states (batch order and expansion
draws), ``best_score`` / ``best_epoch`` / ``best_state`` (the best head so far), ``history``, ``config``
(``asdict`` of the resolved :class:`TrainConfig`) and ``fingerprint`` (of the training data and output
columns). A checkpoint is only resumed by a run with the same training settings on the same data; anything
else is refused with a message that says what differs and how to start afresh.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.pairs import PairedVectors

__all__ = [
    "CHECKPOINT_NAME",
    "RUNTIME_SETTINGS",
    "TrainingState",
    "data_fingerprint",
    "load_checkpoint",
    "save_checkpoint",
    "training_settings",
]

CHECKPOINT_NAME = "checkpoint.pt"

# settings that change how fast a run goes, not what it computes: a run may resume with other values
RUNTIME_SETTINGS = ("amp", "cuda_graph", "eval_batch_size")
# settings added after checkpoints were written: left out at their default, so those checkpoints resume
_LATER_DEFAULTS = {
    "negatives": "global",
    "hidden_dropout": 0.0,
    "input_noise": 0.0,
    "input_dropout": 0.0,
    "ema_decay": 0.0,
    "l2sp_proj": 0.0,
    "l2sp_vocab": 0.0,
    "candidates": "batch",
    "ridge_all_captions": False,
}


def comparable_settings(
    config: dict | None, runtime: tuple[str, ...] = (), later_defaults: dict | None = None
) -> dict | None:
    """``config`` (a training config as a dict) as checkpoints compare it: without the ``runtime`` keys, and
    without each ``later_defaults`` key while it holds that default (a setting added after checkpoints were
    written, so that those checkpoints still resume)."""
    if config is None:
        return None
    later = later_defaults or {}
    return {k: v for k, v in config.items() if k not in runtime and not (k in later and v == later[k])}


def training_settings(config: dict | None) -> dict | None:
    """``config`` (an ``asdict`` of a :class:`TrainConfig`) without the :data:`RUNTIME_SETTINGS`."""
    return comparable_settings(config, RUNTIME_SETTINGS, _LATER_DEFAULTS)


def data_fingerprint(train: PairedVectors, columns: np.ndarray) -> dict:
    """What a resumed run must share with the checkpoint: sizes and a digest of the data and outputs.

    Equal shapes are not enough (another data set of the same size would resume silently), so the digest
    covers the vectors, the caption texts and links, and the output columns.
    """
    h = hashlib.sha256()
    for ident in (*train.image_ids, *train.caption_ids):
        h.update(str(ident).encode("utf-8", "surrogatepass") + b"\0")
    for arr in (train.image_vectors, train.caption_vectors, train.caption_image, columns):
        h.update(np.ascontiguousarray(arr).tobytes())
    for text in train.caption_texts:
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return {"images": len(train.image_ids), "captions": len(train), "dim": train.dim, "sha256": h.hexdigest()}


@dataclass
class TrainingState:
    """What a run carries from one epoch to the next besides the weights, optimiser and generators.

    Attributes:
        epoch: epochs finished.
        best_score: validation MRR of the best eligible epoch so far (-1 before one).
        best_epoch: that epoch (1-based; -1 before one).
        best_state: the head's state dict (CPU copies) at that epoch.
        history: one record per finished epoch.
    """

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def finish_epoch(self, record: dict[str, Any], eligible: bool, head: nn.Module) -> None:
        """Record the epoch ``record["epoch"]``; keep ``head``'s weights if it is eligible and the best so far.

        Selection is by validation MRR (steadier than R@1 on a few dozen images); a tie goes to the later,
        sparser epoch.
        """
        self.epoch = record["epoch"]
        self.history.append(record)
        if eligible and record["mrr"] >= self.best_score:
            self.best_score, self.best_epoch = record["mrr"], record["epoch"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}

    def checkpoint(
        self,
        head: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        mask_generator: torch.Generator,
        config: dict,
        fingerprint: dict,
    ) -> dict[str, Any]:
        """The checkpoint of this state with the run's weights, optimiser and generator states."""
        return {
            "epoch": self.epoch,
            "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "mask_generator": mask_generator.get_state(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "history": self.history,
            "config": config,
            "fingerprint": fingerprint,
        }

    @classmethod
    def restore(
        cls,
        ckpt: dict[str, Any],
        head: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        mask_generator: torch.Generator,
    ) -> TrainingState:
        """Load ``ckpt``'s weights, optimiser and generator states into the run's; its training state."""
        head.load_state_dict(ckpt["head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        mask_generator.set_state(ckpt["mask_generator"])
        return cls(ckpt["epoch"], ckpt["best_score"], ckpt["best_epoch"], ckpt["best_state"], ckpt["history"])


def load_checkpoint(directory: Path | None, fingerprint: dict, config: dict) -> dict | None:
    """The checkpoint in ``directory``, or ``None`` when there is none to resume.

    Args:
        directory: the run's checkpoint directory (``None``: a run without checkpoints).
        fingerprint: :func:`data_fingerprint` of this run's training data.
        config: ``asdict`` of this run's resolved configuration.

    Raises:
        ValueError: the file is not a readable checkpoint of this version, or it was written with other
            training settings or for other training data; the message says how to start afresh.
    """
    if directory is None:
        return None
    path = directory / CHECKPOINT_NAME
    if not path.is_file():
        return None
    ckpt = _read(path)
    _check_settings(path, ckpt, config)
    _check_fingerprint(path, ckpt, fingerprint)
    return ckpt


def _read(path: Path) -> dict:
    try:
        # weights_only: plain tensors and containers, no arbitrary pickle code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: torch raises RuntimeError, EOFError, ...
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(e).__name__}); delete it, or run d2s train "
            "with --restart, to start afresh"
        ) from e
    if not isinstance(ckpt, dict) or "best_score" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of this version; delete it to start afresh")
    return ckpt


def _check_settings(path: Path, ckpt: dict, config: dict) -> None:
    saved, current = training_settings(ckpt.get("config")) or {}, training_settings(config)
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
        raise ValueError(
            f"{path} was written with other settings ({shown}); use another --out, or --restart to "
            "start afresh"
        )


def _check_fingerprint(path: Path, ckpt: dict, fingerprint: dict) -> None:
    if ckpt.get("fingerprint") == fingerprint:
        return
    old = ckpt.get("fingerprint") or {}
    what = [k for k in ("images", "captions", "dim") if old.get(k) != fingerprint[k]]
    detail = ", ".join(f"{k} {old.get(k)} -> {fingerprint[k]}" for k in what) or (
        "same sizes, other ids, vectors or texts"
    )
    raise ValueError(
        f"{path} was written for other training data ({detail}); use another --out, or --restart "
        "to start afresh"
    )


def save_checkpoint(directory: Path | None, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``directory`` atomically (nothing without a directory)."""
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic: a kill leaves the previous checkpoint or the new one, never half
