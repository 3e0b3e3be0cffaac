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


Run = tuple[str, dict, "tuple[int, int] | None"]  # (subdirectory, TrainConfig fields, kill_at)


def train(rank: int, world: int, port: int, runs: list[Run], out: str) -> None:
    """Train each run's config on the test data into ``out``/subdirectory; rank 0 saves each head and
    history there as result.pt. Several runs share one spawn, since starting the processes costs most.

    A run's ``kill_at`` (epoch, step): rank 1 dies there, as a killed process would (no clean-up, no
    exception), so the runs after it never start.
    """
    join(rank, world, port)
    for name, config, kill_at in runs:

        def die(event: str, info: dict, kill_at=kill_at) -> None:
            if kill_at and rank == 1 and event == "step" and (info["epoch"], info["step"]) == tuple(kill_at):
                os._exit(3)

        where = Path(out) / name
        trainer = D2STrainer(
            TrainConfig(**config), vocab=Vocabulary(), checkpoint_dir=where, callbacks=[die], progress=False
        )
        result = trainer.fit(random_pairs())
        if rank == 0:
            state = {
                "state": result.head.state_dict(),
                "history": result.history,
                "bytes": trainer.dist.bytes_sent,
            }
            torch.save(state, where / "result.pt")
    torch.distributed.destroy_process_group()
