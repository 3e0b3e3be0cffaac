"""A rank of the 2-process gloo runs of test_distributed.py (spawned with torch.multiprocessing), and the
image-suggestion data those runs share with the one-process reference (a tiny random BERT, synthetic pairs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pyterrier_d2s.data.synthetic import random_pairs
from pyterrier_d2s.suggest.model import SuggestBiEncoder, SuggestConfig
from pyterrier_d2s.suggest.trainer import BiEncoderTrainConfig, BiEncoderTrainer, SuggestPairs
from pyterrier_d2s.training import D2STrainer, TrainConfig
from pyterrier_d2s.training.distributed import init_from_env, set_local_environment
from pyterrier_d2s.vocab import Vocabulary


def join(rank: int, world: int, port: int) -> None:
    """Set the environment torchrun would set, and join the group."""
    set_local_environment(rank, world, port)
    torch.set_num_threads(1)
    init_from_env(backend="gloo", timeout_s=60)


Run = tuple[str, dict, "tuple[int, int] | None"]  # (subdirectory, TrainConfig fields, kill_at)

WORDS = "dog cat man woman horse red blue park street sofa table plate pizza train bus sky".split()


def tiny_backbone(directory: Path) -> str:
    """A 1-layer width-16 random BERT with the package's WordPiece vocabulary, saved to ``directory``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pyterrier_d2s.vocab import default_tokenizer_dir

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(directory)
    AutoTokenizer.from_pretrained(default_tokenizer_dir()).save_pretrained(directory)
    return str(directory)


def suggest_pairs(n: int = 30, image_dim: int = 8) -> SuggestPairs:
    """``n`` seeded query / caption / image-vector pairs of varying lengths (so slices pad differently)."""
    rng = np.random.default_rng(0)

    def text() -> str:
        return " ".join(rng.choice(WORDS, size=int(rng.integers(2, 9))))

    queries, captions = [text() for _ in range(n)], [text() for _ in range(n)]
    return SuggestPairs(queries, captions, rng.normal(size=(n, image_dim)).astype(np.float32))


def suggest_model(config: dict) -> SuggestBiEncoder:
    """The bi-encoder of a suggest run's ``config`` (``preset``, ``backbone``), built from seed 0 as every rank
    must build it."""
    torch.manual_seed(0)
    return SuggestBiEncoder(
        SuggestConfig.for_preset(config["preset"], backbone=config["backbone"], image_dim=8, max_length=16)
    )


def suggest_fit(config: dict, **trainer) -> tuple[SuggestBiEncoder, BiEncoderTrainer, list]:
    """Train a suggest run's model (``config``: ``preset``, ``backbone`` and BiEncoderTrainConfig fields)."""
    model = suggest_model(config)
    fields = {k: v for k, v in config.items() if k not in ("trainer", "preset", "backbone")}
    bi = BiEncoderTrainer(BiEncoderTrainConfig(**fields), progress=False, **trainer)
    return model, bi, bi.fit(model, suggest_pairs()).history


def train(rank: int, world: int, port: int, runs: list[Run], out: str) -> None:
    """Train each run's config on the test data into ``out``/subdirectory; rank 0 saves each head and
    history there as result.pt. Several runs share one spawn, since starting the processes costs most.

    A run whose config has ``trainer="suggest"`` trains the image-suggestion bi-encoder instead (see
    :func:`suggest_fit`). A run's ``kill_at`` (epoch, step): rank 1 dies there, as a killed process would (no clean-up, no
    exception), so the runs after it never start.
    """
    join(rank, world, port)
    for name, config, kill_at in runs:

        def die(event: str, info: dict, kill_at=kill_at) -> None:
            if kill_at and rank == 1 and event == "step" and (info["epoch"], info["step"]) == tuple(kill_at):
                os._exit(3)

        where = Path(out) / name
        if config.get("trainer") == "suggest":
            model, trainer, history = suggest_fit(config, checkpoint_dir=where, callbacks=[die])
            state = {"state": model.head_state(), "history": history, "bytes": trainer.dist.bytes_sent}
        else:
            trainer = D2STrainer(
                TrainConfig(**config), vocab=Vocabulary(), checkpoint_dir=where, callbacks=[die], progress=False
            )
            result = trainer.fit(random_pairs())
            state = {"state": result.head.state_dict(), "history": result.history, "bytes": trainer.dist.bytes_sent}
        if rank == 0:
            torch.save(state, where / "result.pt")
    torch.distributed.destroy_process_group()
