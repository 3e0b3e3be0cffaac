"""Synthetic paired vectors, written once for the tests and the benchmarks.

* :func:`random_pairs`: small random image/caption pairs (captions near their image) for training tests.
* :func:`planted_pairs`: pairs generated from planted bags of real WordPiece words, where the truth a head
  should recover is known (``benchmarks/phenomena.py``).
* :func:`coco_shaped_pairs`: MSCOCO-shaped pairs (sizes, caption lengths, Zipf word use) for the training
  throughput benchmark.
* :func:`write_unsplit_vectors_dir`: the first pairs of a packaged set as a vectors directory without split
  labels (for CLI and reliability tests).

Every generator is deterministic in its ``seed``; the draws and their order are those of the copies these
functions replace, so benchmark numbers stay comparable (``tests/test_synthetic.py`` holds frozen samples).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .pairs import PairedVectors

if TYPE_CHECKING:
    from ..vocab import Vocabulary

__all__ = [
    "CAPTION_WORDS",
    "COCO_WORDS",
    "FUNCTION_WORDS",
    "coco_shaped_pairs",
    "concept_tokens",
    "planted_pairs",
    "random_pairs",
    "write_unsplit_vectors_dir",
]

# the words of random_pairs' captions
CAPTION_WORDS = tuple(
    "dog cat man woman car bus tree beach red blue small big sitting running table pizza".split()
)
# words of COCO-like captions, most frequent first (coco_shaped_pairs draws them Zipf-like)
COCO_WORDS = tuple(
    (
        "a man woman person people dog cat car bus train street table pizza plate bed room kitchen tree field "
        "grass beach water sky snow ball game player baseball tennis bike motorcycle horse sheep cow bird plane "
        "boat sign red white black blue green small large two three sitting standing walking riding holding "
        "eating looking on in of with at next to near the an and is are some front top while"
    ).split()
)
# the words between a planted caption's concepts ("a dog and a tree on the beach")
FUNCTION_WORDS = ("a", "the", "and", "on", "with", "of", "in")


def random_pairs(
    n_images: int = 24, captions_per_image: int = 2, dim: int = 8, seed: int = 0, name: str = "synthetic"
) -> PairedVectors:
    """Unit image vectors, each caption its image plus noise (0.3 per coordinate), re-normalised; captions
    are 4 random :data:`CAPTION_WORDS`. Ids ``i<k>`` / ``c<k>``, no split labels; ``name`` names the set
    in error messages."""
    rng = np.random.RandomState(seed)
    iv = rng.randn(n_images, dim).astype(np.float32)
    iv /= np.linalg.norm(iv, axis=1, keepdims=True)
    links = np.repeat(np.arange(n_images), captions_per_image)
    cv = iv[links] + 0.3 * rng.randn(len(links), dim).astype(np.float32)
    cv /= np.linalg.norm(cv, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(CAPTION_WORDS, 4)) for _ in links]
    return PairedVectors(
        image_ids=[f"i{i}" for i in range(n_images)],
        image_vectors=iv,
        caption_ids=[f"c{i}" for i in range(len(links))],
        caption_texts=texts,
        caption_image=links,
        caption_vectors=cv.astype(np.float32),
        name=name,
    )


def concept_tokens(vocab: Vocabulary, n: int, seed: int) -> list[str]:
    """``n`` whole-word, alphabetic, 4+ letter WordPiece tokens (no sub-words, no function words)."""
    words = [t for t in vocab.tokens[2000:] if t.isalpha() and t.isascii() and len(t) >= 4]
    rng = np.random.default_rng(seed)
    return list(rng.choice(words, size=n, replace=False))


def planted_pairs(
    vocab: Vocabulary,
    n_images: int,
    captions_per_image: int = 1,
    n_concepts: int = 300,
    per_image: int = 4,
    dim: int = 128,
    noise: float = 0.3,
    gap: float = 1.0,
    seed: int = 0,
) -> tuple[PairedVectors, list[list[str]]]:
    """Paired vectors from planted bags of words, and each image's planted concepts.

    Each image is a bag of ``per_image`` of ``n_concepts`` :func:`concept_tokens` (Zipf-popular); each of its
    captions names a random 3 of them between :data:`FUNCTION_WORDS`. A fixed random map sends each concept to
    a ``dim``-dimensional direction; an image is the normalised sum of its concepts' directions plus noise, a
    caption the sum of the concepts it names plus a shared modality offset of norm about ``gap`` (the
    CLIP-like gap) plus noise.
    """
    rng = np.random.default_rng(seed)
    concepts = concept_tokens(vocab, n_concepts, seed)
    popularity = 1.0 / np.arange(1, n_concepts + 1)
    popularity /= popularity.sum()
    directions = rng.normal(size=(n_concepts, dim)) / np.sqrt(dim)
    offset = gap * rng.normal(size=dim) / np.sqrt(dim)
    bags = [rng.choice(n_concepts, size=per_image, replace=False, p=popularity) for _ in range(n_images)]

    def vector(ids: np.ndarray, shift: np.ndarray | float) -> np.ndarray:
        v = directions[ids].sum(axis=0) + shift + noise * rng.normal(size=dim) / np.sqrt(dim)
        return v / np.linalg.norm(v)

    image_vectors = np.stack([vector(b, 0.0) for b in bags]).astype(np.float32)
    caption_ids, texts, links, caption_vectors = [], [], [], []
    for i, bag in enumerate(bags):
        for c in range(captions_per_image):
            named = rng.choice(bag, size=min(3, per_image), replace=False)
            words = []
            for cid in named:
                words += [str(rng.choice(FUNCTION_WORDS)), concepts[cid]]
            caption_ids.append(f"{i}-{c}")
            texts.append(" ".join(words))
            links.append(i)
            caption_vectors.append(vector(named, offset))
    data = PairedVectors(
        image_ids=[str(i) for i in range(n_images)],
        image_vectors=image_vectors,
        caption_ids=caption_ids,
        caption_texts=texts,
        caption_image=np.asarray(links),
        caption_vectors=np.stack(caption_vectors).astype(np.float32),
        name=f"planted-{n_images}",
    )
    return data, [[concepts[c] for c in bag] for bag in bags]


def coco_shaped_pairs(
    n_images: int, captions_per_image: int, dim: int, seed: int = 0, val_images: int = 0
) -> PairedVectors:
    """MSCOCO-shaped pairs: unit image vectors; a caption is its image plus noise of norm about 0.8 (so
    in-batch retrieval is learnable but not trivial), with 8-14 Zipf-drawn :data:`COCO_WORDS`. The last
    ``val_images`` images are split ``val``, the others ``train``."""
    rng = np.random.default_rng(seed)
    iv = rng.standard_normal((n_images, dim), dtype=np.float32)
    iv /= np.linalg.norm(iv, axis=1, keepdims=True)
    links = np.repeat(np.arange(n_images), captions_per_image)
    cv = iv[links] + (0.8 / np.sqrt(dim)) * rng.standard_normal((len(links), dim), dtype=np.float32)
    cv /= np.linalg.norm(cv, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, len(COCO_WORDS) + 1)
    p /= p.sum()
    lengths = rng.integers(8, 15, len(links))
    words = rng.choice(len(COCO_WORDS), size=int(lengths.sum()), p=p)
    cuts = np.cumsum(lengths)[:-1]
    texts = [" ".join(COCO_WORDS[w] for w in chunk) for chunk in np.split(words, cuts)]
    split = np.array(["train"] * (n_images - val_images) + ["val"] * val_images)
    return PairedVectors(
        image_ids=[str(i) for i in range(n_images)],
        image_vectors=iv,
        caption_ids=[str(i) for i in range(len(links))],
        caption_texts=texts,
        caption_image=links,
        caption_vectors=cv,
        image_split=split,
        name=f"synthetic-coco-{n_images}x{captions_per_image}-d{dim}",
    )


def write_unsplit_vectors_dir(path: str | os.PathLike, n: int, source: str = "coco500") -> Path:
    """The first ``n`` caption pairs of ``source`` (a packaged name or path) as a new vectors directory
    ``path`` without split labels: image ``k`` with caption ``k``, so ``source`` must have one caption per
    image in image order (coco500 has). Returns ``path``."""
    from . import load_pairs  # lazily: the package module may one day import this one

    data = load_pairs(source)
    path = Path(path)
    path.mkdir()
    with open(path / "images.jsonl", "w") as f:
        for i in data.image_ids[:n]:
            f.write(json.dumps({"image_id": i}) + "\n")
    with open(path / "captions.jsonl", "w") as f:
        for c, t, r in zip(data.caption_ids[:n], data.caption_texts[:n], data.caption_image[:n], strict=True):
            f.write(json.dumps({"caption_id": c, "image_id": data.image_ids[r], "caption": t}) + "\n")
    np.save(path / "image_vectors.npy", data.image_vectors[:n])
    np.save(path / "caption_vectors.npy", data.caption_vectors[:n])
    return path
