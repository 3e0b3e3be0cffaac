"""Frames assembled from column arrays that already have their final dtypes: the per-call frames of one query
at a time (a query frame with ``query_toks`` added, a result frame of k rows).

pandas' public paths re-infer and re-check every column: ``frame[c]`` builds a Series per access and
``pd.DataFrame(dict)`` sanitises each array again, together most of what a single query costs after retrieval
(about 0.3 ms for a 7-column, 10-row frame on the machines we measured; ``benchmarks/latency.py``). The arrays
handed in here are taken from an input frame's own columns, or are numeric / object numpy arrays made for the
frame, so they are put together as they are. Where pandas lacks the private entry points used (they exist in
every pandas since 1.3), the public constructors run instead, with the same result.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["column_arrays", "frame_from_arrays", "object_array"]

_FAST = hasattr(pd.DataFrame, "_iter_column_arrays") and hasattr(pd.DataFrame, "_from_arrays")


def column_arrays(frame: pd.DataFrame) -> dict[str, Any]:
    """``{column: its array}`` (numpy or pandas extension arrays, not copied) in column order."""
    if _FAST:
        try:
            return dict(zip(frame.columns, frame._iter_column_arrays(), strict=True))
        except (AttributeError, TypeError, ValueError):  # pragma: no cover - a pandas without the fast path
            pass
    return {c: frame[c].array for c in frame.columns}


def object_array(values: list) -> np.ndarray:
    """A 1-d object array of ``values`` (never split into a 2-d array, e.g. for a list of dicts or vectors)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@functools.lru_cache(maxsize=64)
def _column_index(names: tuple) -> pd.Index:
    # (an Index of strings is re-inferred on every construction; a pipeline's frames have a few column lists.
    # Index objects are immutable, so frames may share one)
    return pd.Index(list(names))


def frame_from_arrays(columns: Mapping[str, Any], index: pd.Index | int) -> pd.DataFrame:
    """A DataFrame of the 1-d ``columns`` (in their order) over ``index`` (or a ``RangeIndex`` of that length).

    Every array must have the index's length and the dtype its column should have: strings as the pandas
    string array of an existing column (``frame_column.array.take(...)``), not as an object array.
    """
    if isinstance(index, int):
        index = pd.RangeIndex(index)
    arrays = list(columns.values())
    if any(len(a) != len(index) for a in arrays):
        lengths = {c: len(a) for c, a in columns.items()}
        raise ValueError(f"columns of lengths {lengths} for an index of {len(index)} rows")
    if _FAST:
        try:
            return pd.DataFrame._from_arrays(
                arrays, columns=_column_index(tuple(columns)), index=index, verify_integrity=False
            )
        except (AttributeError, TypeError):  # pragma: no cover - a pandas whose signature differs
            pass
    return pd.DataFrame(dict(columns), index=index)
