import numpy as np
import pytest
import torch

from pyterrier_d2s.data.synthetic import write_unsplit_vectors_dir
from pyterrier_d2s.vocab import Vocabulary

__all__ = ["write_unsplit_vectors_dir"]  # test modules import it from here


@pytest.fixture(scope="session")
def vocab() -> Vocabulary:
    return Vocabulary()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
