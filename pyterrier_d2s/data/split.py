"""Held-out splits by image: a seeded train/val/test split (or one fold of k), its JSON description, and
applying a saved description back onto the same data.

A split is by *image*: every caption goes where its image goes, so no test image (nor any caption of it) is
seen in training. The description is what ``d2s train`` saves next to a head as ``split.json``;
``d2s index``/``d2s evaluate`` read it back (:func:`split_for_head`) to index and evaluate exactly the images
the head was not trained on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from .pairs import TRAIN_SPLITS, DataError, PairedVectors

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLIT_FILE",
    "apply_split",
    "assign_split",
    "describe_split",
    "ensure_split",
    "has_train_split",
    "load_split",
    "save_split",
    "split_for_head",
    "split_summary",
    "without_split",
]

SPLIT_FILE = "split.json"
# train / val / test fractions of the images
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
# in a fold split, the share of the non-test images that validates (picks the best epoch)
FOLD_VAL_FRACTION = 1 / 8


def has_train_split(data: PairedVectors) -> bool:
    """Whether ``data`` carries split labels with a training split (which :func:`ensure_split` then keeps)."""
    return data.image_split is not None and bool(set(TRAIN_SPLITS) & set(data.splits))


def _too_few(data: PairedVectors, what: str) -> DataError:
    return DataError(
        f"{data.name}: {len(data.image_ids)} images are too few for {what} "
        "(need at least 1 validation, 1 test and 2 training images)"
    )


def _labelled(data: PairedVectors, test: np.ndarray, val: np.ndarray, how: dict) -> PairedVectors:
    split = np.full(len(data.image_ids), "train", dtype=object)
    split[val] = "val"
    split[test] = "test"
    # a fresh meta dict: the labels' provenance must not leak into the unsplit original
    return dataclasses.replace(data, image_split=split.astype(str), meta={**data.meta, "split": how})


def assign_split(
    data: PairedVectors,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    fold: int | None = None,
    num_folds: int | None = None,
) -> PairedVectors:
    """A copy of ``data`` with ``image_split`` set to a seeded ``train``/``val``/``test`` split by image.

    Without ``fold``: the images are shuffled with ``seed``; the first ``round(n * test)`` are test, the next
    ``round(n * val)`` validation (each at least 1), the rest train. With ``fold=f, num_folds=k``
    (``0 <= f < k``): the seeded shuffle is cut into ``k`` disjoint folds of (nearly) equal size, fold ``f``
    is test, a seeded 1/8 of the remaining images (at least 1) is validation and the rest train, so the
    ``k`` folds test every image exactly once. Existing labels are replaced; :func:`ensure_split` keeps them.

    Raises:
        DataError: fewer than 1 validation, 1 test or 2 training images would result.
        ValueError: bad fractions or fold numbers.
    """
    order = np.random.default_rng(seed).permutation(len(data.image_ids))
    if fold is None and num_folds is None:
        return _fraction_split(data, order, seed, fractions)
    if fold is None or num_folds is None:
        raise ValueError("give both fold and num_folds (--fold and --num-folds), or neither")
    return _fold_split(data, order, seed, fold, num_folds)


def _fraction_split(
    data: PairedVectors, order: np.ndarray, seed: int, fractions: tuple[float, float, float]
) -> PairedVectors:
    """:func:`assign_split` without folds: the first ``round(n * test)`` of ``order`` test, the next
    ``round(n * val)`` validation."""
    n = len(order)
    f_train, f_val, f_test = (float(f) for f in fractions)
    if min(f_train, f_val, f_test) < 0 or abs(f_train + f_val + f_test - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    n_test = max(1, int(round(n * f_test)))
    n_val = max(1, int(round(n * f_val)))
    if n - n_test - n_val < 2:
        raise _too_few(data, "a train/val/test split")
    how = {"seed": int(seed), "fractions": {"train": f_train, "val": f_val, "test": f_test}}
    return _labelled(data, order[:n_test], order[n_test : n_test + n_val], how)


def _fold_split(
    data: PairedVectors, order: np.ndarray, seed: int, fold: int, num_folds: int
) -> PairedVectors:
    """:func:`assign_split` with ``fold`` of ``num_folds``: that fold of ``order`` test, a seeded 1/8 of the
    rest validation."""
    if num_folds < 2 or not 0 <= fold < num_folds:
        raise ValueError(
            f"fold must be in 0..num_folds-1 with num_folds >= 2, got fold {fold} of {num_folds}"
        )
    n = len(order)
    if n < num_folds:
        raise DataError(f"{data.name}: {n} images cannot make {num_folds} folds of at least 1 test image")
    folds = np.array_split(order, num_folds)
    test = folds[fold]
    rest = np.concatenate([f for i, f in enumerate(folds) if i != fold])
    n_val = max(1, int(round(len(rest) * FOLD_VAL_FRACTION)))
    if len(rest) - n_val < 2:
        raise _too_few(data, f"fold {fold} of {num_folds}")
    # the validation images of a fold: their own seeded draw, so that they differ between folds
    val = np.random.default_rng([int(seed), int(fold), int(num_folds)]).permutation(rest)[:n_val]
    how = {"seed": int(seed), "fold": int(fold), "num_folds": int(num_folds)}
    return _labelled(data, test, val, how)


def ensure_split(
    data: PairedVectors,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
) -> PairedVectors:
    """``data`` itself if it has split labels with a training split, else :func:`assign_split` of it."""
    if has_train_split(data):
        return data
    return assign_split(data, seed=seed, fold=fold, num_folds=num_folds)


def without_split(data: PairedVectors) -> PairedVectors:
    """A copy of ``data`` without split labels: training, validation and evaluation all use everything."""
    return dataclasses.replace(data, image_split=None, meta={**data.meta, "split": {"held_out": False}})


def _ids_of(data: PairedVectors, split: str) -> list[str]:
    if data.image_split is None:
        return []
    return [i for i, s in zip(data.image_ids, data.image_split, strict=True) if s == split]


def split_summary(data: PairedVectors) -> dict:
    """How ``data`` is split, for reports: ``held_out``, where the split came from, and image counts."""
    how = dict(data.meta.get("split") or {})
    n = len(data.image_ids)
    if data.image_split is None:
        return {"held_out": False, "source": "none", "n_train": n, "n_val": n, "n_test": n}
    train, val = data.train_and_validation()
    test = data.evaluation_split()
    held_out = "test" in data.splits
    source = "labels" if "seed" not in how else ("fold" if "fold" in how else "seeded")
    return {
        "held_out": held_out,
        "source": source,
        **{k: v for k, v in how.items() if k != "held_out"},
        "n_train": len(train.image_ids),
        "n_val": len(val.image_ids),
        "n_test": len(test.image_ids),
    }


def describe_split(data: PairedVectors) -> dict:
    """The JSON description of ``data``'s split: :func:`split_summary` plus the test and validation ids."""
    desc = {"version": 1, "data": data.name, **split_summary(data), "n_images": len(data.image_ids)}
    if desc["held_out"]:
        desc["test"] = _ids_of(data, "test")
        desc["val"] = _ids_of(data, "val")
    return desc


def apply_split(data: PairedVectors, description: dict) -> PairedVectors:
    """A copy of ``data`` labelled as ``description`` (from :func:`describe_split`) says.

    Its ``test`` and ``val`` images get those labels, every other image ``train``. A description of an unsplit
    run (``held_out`` false) gives the data without labels.

    Raises:
        DataError: an image id of the description is not in ``data`` (the first such id is named).
    """
    if not description.get("held_out", "test" in description):
        return without_split(data)
    row_of = {iid: r for r, iid in enumerate(data.image_ids)}
    rows = {split: _rows_of(data, row_of, split, description.get(split, [])) for split in ("test", "val")}
    how = {k: description[k] for k in ("seed", "fractions", "fold", "num_folds") if k in description}
    return _labelled(data, rows["test"], rows["val"], how)


def _rows_of(data: PairedVectors, row_of: dict[str, int], split: str, ids: list) -> np.ndarray:
    """Rows in ``data`` of a description's ``split`` image ``ids``; a DataError names the first missing one."""
    ids = [str(i) for i in ids]
    missing = next((i for i in ids if i not in row_of), None)
    if missing is not None:
        raise DataError(f"{data.name}: the split's {split} image {missing!r} is not in the data")
    return np.array([row_of[i] for i in ids], dtype=np.int64)


def save_split(data_or_description: PairedVectors | dict, directory: str | os.PathLike) -> Path:
    """Write the split description as ``split.json`` in ``directory`` (a head directory); its path."""
    desc = data_or_description
    if isinstance(desc, PairedVectors):
        desc = describe_split(desc)
    path = Path(directory) / SPLIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    return path


def load_split(directory: str | os.PathLike) -> dict | None:
    """The ``split.json`` of a head directory, or ``None`` when it has none (a head from before split.json)."""
    path = Path(directory) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg})") from e
    if not isinstance(desc, dict):
        raise DataError(f"{path}: not a split description (a JSON object)")
    return desc


def split_for_head(data: PairedVectors, head_dir: str | os.PathLike) -> PairedVectors:
    """``data`` split as the head in ``head_dir`` was trained: so that its evaluation split is the head's test.

    Data with its own split labels keeps them, but their test images must be the ones of the head's
    ``split.json``; data without labels gets the saved split applied. A head without ``split.json`` leaves
    ``data`` as it is.

    Raises:
        DataError: the labels disagree with ``split.json``, or the data lacks one of its images.
    """
    desc = load_split(head_dir)
    if desc is None:
        return data
    path = Path(head_dir) / SPLIT_FILE
    if data.image_split is None:
        return apply_split(data, desc)
    held_out = bool(desc.get("held_out", "test" in desc))
    if not held_out:
        # trained on everything (--no-split): its numbers are on everything, whatever labels the data has
        return without_split(data)
    ours, theirs = set(_ids_of(data, "test")), {str(i) for i in desc.get("test", [])}
    if ours != theirs:
        odd = sorted(ours ^ theirs)[0]
        where = "the data's" if odd in ours else f"{path}'s"
        raise DataError(
            f"{data.name}: its test split ({len(ours)} images) is not the one in {path} ({len(theirs)} "
            f"images): image {odd!r} is only in {where}"
        )
    return data
