"""What a head's terms say: the top-k terms of captions and of their images, ``*`` marking the terms that
occur in the caption (in the spirit of the paper's Table 4). :func:`explain` is ``d2s explain``;
:func:`explain_rows` the same for chosen caption rows of loaded data and a loaded head.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .data import PairedVectors
    from .model import D2S

__all__ = [
    "EXPLAINED_CAPTIONS",
    "caption_rows_of",
    "explain",
    "explain_rows",
    "format_explained",
    "test_caption_rows",
]

logger = logging.getLogger(__name__)

# How many captions (the first test captions of the set) are explained by default.
EXPLAINED_CAPTIONS = 3


def test_caption_rows(data: PairedVectors, n: int) -> list[int]:
    """The first ``n`` caption rows of ``data``'s evaluation split (all captions without a test split)."""
    if "test" not in data.splits:
        return list(range(min(n, len(data))))
    return [int(r) for r in np.flatnonzero(data.image_split[data.caption_image] == "test")[:n]]


def caption_rows_of(data: PairedVectors, item_id: str) -> list[int]:
    """The caption rows of ``item_id``: that caption's, or every caption of that image; a KeyError if
    ``data`` has neither."""
    if item_id in data.caption_ids:
        return [data.caption_ids.index(item_id)]
    if item_id in data.image_ids:
        image_row = data.image_ids.index(item_id)
        return [int(r) for r in np.flatnonzero(data.caption_image == image_row)]
    raise KeyError(f"{item_id!r} is neither a caption id nor an image id of {data.name}")


def explain_rows(model: D2S, data: PairedVectors, rows: Sequence[int], k: int = 10) -> list[dict]:
    """Per caption row: ``caption_id``, ``caption``, ``image_id``, ``split`` (of its image; ``None`` without
    labels), the top-``k`` ``caption_terms`` (expanded caption) and ``image_terms`` (its image), best first,
    and ``own_terms`` (the caption's own tokens, sorted)."""
    captions = model.encode_texts([data.caption_texts[r] for r in rows], data.caption_vectors[list(rows)])
    images = model.encode_images(data.image_vectors[data.caption_image[list(rows)]])
    own = model.vocab.token_ids([data.caption_texts[r] for r in rows])
    out = []
    for n, r in enumerate(rows):
        own_toks = set(model.vocab.decode(own[n]))
        out.append(
            {
                "caption_id": data.caption_ids[r],
                "caption": data.caption_texts[r],
                "image_id": data.image_ids[data.caption_image[r]],
                "split": None if data.image_split is None else str(data.image_split[data.caption_image[r]]),
                "caption_terms": [t for t, _ in model.top_terms(captions[n], k)[0]],
                "image_terms": [t for t, _ in model.top_terms(images[n], k)[0]],
                "own_terms": sorted(own_toks),
            }
        )
    return out


def explain(
    model: str | os.PathLike,
    data: str | os.PathLike,
    item_id: str | None = None,
    k: int = 20,
    notify: Callable[[str], None] | None = None,
) -> list[dict]:
    """:func:`explain_rows` of the head in ``model`` for caption or image ``item_id`` of ``data`` (default:
    the first :data:`EXPLAINED_CAPTIONS` captions of the head's test images, by its split.json).

    ``notify`` (default: logged as a warning) hears when the item is not a test image of the head: its
    terms were then seen in training.
    """
    from .data import load_pairs, split_for_head
    from .model import D2S

    head = D2S.from_pretrained(model)
    pairs = split_for_head(load_pairs(data), model)
    if item_id is None:
        rows = test_caption_rows(pairs, EXPLAINED_CAPTIONS)
    else:
        try:
            rows = caption_rows_of(pairs, item_id)
        except KeyError:
            raise KeyError(f"{item_id!r} is neither a caption id nor an image id of {data}") from None
    items = explain_rows(head, pairs, rows, k=k)
    if "test" in pairs.splits and any(item["split"] != "test" for item in items):
        (notify or logger.warning)(
            f"{item_id!r} is not a test image of this head ({items[0]['split']}): its terms were seen in training"
        )
    return items


def _marked(terms: list[str], own: set[str]) -> str:
    return " ".join(t + ("*" if t in own else "") for t in terms)


def format_explained(items: list[dict]) -> str:
    """:func:`explain_rows`' items as text: per item a blank line, the caption with its ids, and the caption's
    and the image's terms with ``*`` after those in the caption."""
    lines = []
    for item in items:
        own = set(item["own_terms"])
        lines += [
            "",
            f"{item['caption']}  (caption {item['caption_id']}, image {item['image_id']})",
            f"  caption: {_marked(item['caption_terms'], own)}",
            f"  image:   {_marked(item['image_terms'], own)}",
        ]
    return "\n".join(lines)
