import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pyterrier_d2s.vocab import Vocabulary


@pytest.fixture(scope="session")
def vocab() -> Vocabulary:
    return Vocabulary()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def write_unsplit_vectors_dir(path: Path, n: int) -> Path:
    """The first ``n`` coco500 pairs as a vectors directory without split labels."""
    from pyterrier_d2s.data import load_pairs

    data = load_pairs("coco500")
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
