"""A training run from a data set, as ``d2s train`` does it: choose the held-out split, train a head into a
directory (resuming its checkpoint, or setting it aside), and report the paper's numbers on the test images.

:func:`train_head` is the whole run; :func:`training_split` the split it trains on. Kept outside
:mod:`pyterrier_d2s.training` on purpose: the report evaluates the head with :mod:`pyterrier_d2s.evaluation`,
and ``training`` itself stays free of everything but the trainer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .data import PairedVectors
    from .training import TrainConfig

__all__ = [
    "refuse_checkpoint_of_another_split",
    "saved_test_report",
    "set_aside_checkpoint",
    "train_head",
    "training_split",
]

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]


def training_split(
    data: PairedVectors,
    out: str | os.PathLike,
    *,
    split_seed: int | None = None,
    fold: int | None = None,
    num_folds: int | None = None,
    no_split: bool = False,
    notify: Notify | None = None,
) -> PairedVectors:
    """The data a head trained into ``out`` trains on, split as asked (a seeded split by image by default).

    ``split_seed`` (default 0), or ``fold`` of ``num_folds``, split data without split labels 80/10/10 by
    image; data with its own labels keep them; ``no_split`` trains, validates and reports on every image.
    The split is written to ``out``/split.json before training, so that a killed run's checkpoint is tied to
    it: a checkpoint there from a run on another split is refused rather than resumed. ``notify`` receives
    the notes for a caller to show (default: logged as warnings).
    """
    from .data import save_split

    data = _split_for_training(data, split_seed, fold, num_folds, no_split, notify or logger.warning)
    refuse_checkpoint_of_another_split(data, out)
    save_split(data, out)
    return data


def refuse_checkpoint_of_another_split(data: PairedVectors, out: str | os.PathLike) -> None:
    """Raise a ValueError when ``out`` holds a checkpoint of a run whose split.json is not ``data``'s split."""
    from .data import SPLIT_FILE, describe_split, load_split
    from .training.trainer import CHECKPOINT_NAME

    old = load_split(out)
    if old is None or not (Path(out) / CHECKPOINT_NAME).is_file():
        return
    new = describe_split(data)
    if any(old.get(k) != new.get(k) for k in ("held_out", "test", "val")):
        raise ValueError(
            f"{Path(out) / CHECKPOINT_NAME} is from a run on another split ({Path(out) / SPLIT_FILE} differs); "
            "use another --out or delete it"
        )


def _split_for_training(
    data: PairedVectors,
    seed: int | None,
    fold: int | None,
    num_folds: int | None,
    no_split: bool,
    notify: Notify,
) -> PairedVectors:
    from .data import ensure_split, has_train_split, without_split

    if (fold is None) != (num_folds is None):
        raise ValueError("give both --fold and --num-folds, or neither")
    chosen = [o for o, v in (("--split-seed", seed), ("--fold", fold)) if v is not None]
    if no_split:
        if chosen:
            raise ValueError(f"--no-split cannot be combined with {' and '.join(chosen)}")
        notify(
            f"--no-split: trained, validated and reported on the same {len(data.image_ids)} images of "
            f"{data.name} (held_out: false)"
        )
        return without_split(data)
    if has_train_split(data):
        # the data's own split (Karpathy's, coco500's fixed one) is what its index and evaluation use too
        if chosen:
            raise ValueError(
                f"{' and '.join(chosen)}: {data.name} has its own split labels ({', '.join(data.splits)}); "
                "these options split data without labels (--no-split trains on everything)"
            )
        if "test" not in data.splits:
            notify(
                f"{data.name} has split labels but no test split: the numbers are on every image "
                "(held_out: false)"
            )
        return data
    return ensure_split(data, seed=0 if seed is None else seed, fold=fold, num_folds=num_folds)


def set_aside_checkpoint(out: str | os.PathLike) -> Path | None:
    """Move the checkpoint in ``out`` aside so that the next run starts over; returns where it went.

    A readable checkpoint becomes ``checkpoint.pt.old``, an unreadable one (truncated, empty, foreign)
    ``checkpoint.pt.corrupt``; ``None`` when there is none.
    """
    import torch

    from .training.trainer import CHECKPOINT_NAME

    ckpt = Path(out) / CHECKPOINT_NAME
    if not ckpt.exists():
        return None
    try:
        torch.load(ckpt, map_location="cpu", weights_only=True)
        suffix = ".old"
    except Exception:  # unreadable: truncated, empty, foreign
        suffix = ".corrupt"
    return ckpt.replace(ckpt.with_name(CHECKPOINT_NAME + suffix))


# options beside the recipe's that train's report records (as the run resolved them)
_REPORTED_OPTIONS = ("caption_draw", "own_terms", "own_token_fit", "proj_init", "regulariser")


def train_head(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    split_seed: int | None = None,
    fold: int | None = None,
    num_folds: int | None = None,
    no_split: bool = False,
    restart: bool = False,
    device: str | None = None,
    progress: bool = True,
    notify: Notify | None = None,
) -> dict:
    """Train a head on ``data`` (a packaged name, vectors directory or authors' dir) into ``out``; its report.

    The split is :func:`training_split`'s; a checkpoint in ``out`` is resumed (``restart``: set aside
    first). The head is saved to ``out`` with the report (what ``d2s train`` prints) in its config's
    ``extra["test"]``: ``data``, ``exp``, ``eta``, the split and the paper's numbers on the test images
    (``held_out``, ``split``, ``dense_r1``, ``sparse_r1``..., ``flops``, ``exact20``, ``semantic20``...), the
    values the run used, ``output_tokens``, ``best_epoch``, ``seconds`` and ``out``.
    """
    from .data import load_pairs
    from .training import D2STrainer, TrainConfig
    from .training.distributed import init_from_env

    started = time.perf_counter()
    config = config if config is not None else TrainConfig()
    dist = init_from_env()  # one process, or this rank of a torchrun job
    split = dict(split_seed=split_seed, fold=fold, num_folds=num_folds, no_split=no_split)
    pairs = _rank_split(load_pairs(data), out, split, restart, dist, notify)
    trainer = D2STrainer(config, checkpoint_dir=out, device=device, progress=progress, distributed=dist)
    result = trainer.fit(pairs, dense_encoder=pairs.meta.get("dense_encoder"))
    if not dist.is_main:  # rank 0 holds the same head: it alone evaluates and writes it
        return {"rank": dist.rank, "world_size": dist.world, "out": str(out)}
    result.head.save_pretrained(out)
    report = {
        "data": str(data),
        "exp": config.exp,
        "eta": config.eta,
        **_test_numbers(result.head, pairs, data),
        **result.config.recipe_values(),
        **{key: getattr(result.config, key) for key in _REPORTED_OPTIONS},
        "output_tokens": result.head.output_vocab_size,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - started, 1),
        "world_size": dist.world,
        "out": str(out),
    }
    (result.head.config.extra or {}).update({"test": report})
    result.head.save_pretrained(out)
    return report


def _rank_split(
    data: PairedVectors, out: str | os.PathLike, split: dict, restart: bool, dist, notify: Notify | None
) -> PairedVectors:
    """:func:`training_split` of ``data`` (and ``restart``'s set-aside) on rank 0; the same split, computed
    without writing, on the other ranks once rank 0 is done, so that no two ranks write split.json at once."""
    if dist.is_main:
        pairs = training_split(data, out, notify=notify, **split)
        if restart:
            set_aside_checkpoint(out)
    dist.barrier()
    if not dist.is_main:
        pairs = _split_for_training(
            data, split["split_seed"], split["fold"], split["num_folds"], split["no_split"], lambda _: None
        )
    return pairs


def _test_numbers(head, pairs: PairedVectors, data: str | os.PathLike) -> dict:
    """The split and the paper's numbers of ``head`` on the evaluation split of ``pairs`` (train's report)."""
    from .data import DataError, load_all_captions, split_summary
    from .evaluation import dense_metrics, evaluate_head

    test = pairs.evaluation_split()
    split = split_summary(pairs)
    try:  # every caption of each image, where the data ship them (coco500: COCO's five)
        all_captions = load_all_captions(data)
    except (DataError, OSError):
        all_captions = None
    sparse = evaluate_head(head, test, all_captions=all_captions)
    dense = dense_metrics(test)
    return {
        "held_out": split.pop("held_out"),
        "split": split,
        "dense_r1": dense["R@1"],
        "sparse_r1": sparse["R@1"],
        "sparse_r5": sparse["R@5"],
        "sparse_r10": sparse["R@10"],
        "sparse_mrr10": sparse["RR@10"],
        "flops": sparse["flops"],
        "exact20": sparse["exact20"],
        "semantic20": sparse["semantic20"],
        "image_exact20": sparse["image_exact20"],
        "q_nnz": sparse["q_nnz"],
        "d_nnz": sparse["d_nnz"],
    }


def saved_test_report(head_dir: str | os.PathLike) -> dict:
    """The report :func:`train_head` saved with the head in ``head_dir`` (its config's ``extra["test"]``)."""
    cfg_file = Path(head_dir) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{head_dir} is not a head directory (no config.json)")
    report = json.loads(cfg_file.read_text()).get("extra", {}).get("test")
    if report is None:
        raise ValueError(f"{head_dir} has no test report: train it with d2s train")
    return report
