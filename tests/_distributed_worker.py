"""A rank of the 2-process gloo runs of test_distributed.py (spawned with torch.multiprocessing)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyterrier_d2s.data.synthetic import random_pairs
from pyterrier_d2s.training import D2STrainer, TrainConfig
from pyterrier_d2s.training.distributed import init_from_env
from pyterrier_d2s.vocab import Vocabulary


def join(rank: int, world: int, port: int) -> None:
    """Set the environment torchrun would set, and join the group."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    init_from_env(backend="gloo", timeout_s=60)


def train(rank: int, world: int, port: int, config: dict, out: str, kill_at: tuple[int, int] | None) -> None:
    """Train ``config`` on the test data; rank 0 saves the head and history to ``out``/result.pt.

    ``kill_at`` (epoch, step): rank 1 dies there, as a killed process would (no clean-up, no exception).
    """
    join(rank, world, port)

    def die(event: str, info: dict) -> None:
        if kill_at and rank == 1 and event == "step" and (info["epoch"], info["step"]) == kill_at:
            os._exit(3)

    trainer = D2STrainer(
        TrainConfig(**config), vocab=Vocabulary(), checkpoint_dir=out, callbacks=[die], progress=False
    )
    result = trainer.fit(random_pairs())
    if rank == 0:
        torch.save(
            {"state": result.head.state_dict(), "history": result.history, "bytes": trainer.dist.bytes_sent},
            Path(out) / "result.pt",
        )
    torch.distributed.destroy_process_group()
