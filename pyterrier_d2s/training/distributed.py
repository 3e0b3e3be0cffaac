"""Data-parallel training on ``torch.distributed`` (launched by ``torchrun``; gloo on CPU, NCCL on GPUs).

The pieces a trainer needs to run as N processes with the result of one, kept apart from any one trainer so
that other trainers (the image-suggestion bi-encoders) reuse them:

* :func:`init_from_env` joins the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); outside ``torchrun`` it returns the one-process
  :data:`SINGLE`, so a trainer has one code path.
* :meth:`Distributed.local_slice` is the sharded sampler: every rank draws the same seeded permutation and
  the same global batch from it, and takes its own contiguous slice of that batch, so the ranks' shards of
  an epoch are disjoint, cover it, and do not depend on N beyond where the cuts fall.
* :meth:`Distributed.gather` concatenates every rank's rows *with gradients*
  (``torch.distributed.nn.functional.all_gather``), so in-batch negatives span the global batch.
* :meth:`Distributed.average_gradients` is the data-parallel gradient all-reduce (mean).
* :meth:`Distributed.broadcast_object`, :meth:`Distributed.barrier`, :attr:`Distributed.is_main`: rank 0
  alone validates and writes checkpoints; the others receive its records.

Why a global-batch loss and a mean all-reduce give exactly the one-process gradient: every rank computes the
same loss ``L`` over the gathered global batch. The gather's backward *sums* the ranks' gradients for each
slice (a reduce-scatter), so rank r's parameters receive ``N · ∂L/∂θ`` restricted to its own rows; the mean
all-reduce then gives ``(1/N) Σ_r N · ∂L/∂θ|_r = ∂L/∂θ``, the one-process gradient (up to float summation
order). :attr:`Distributed.bytes_sent` counts the payload each rank hands to collectives, for benchmarks.
"""

from __future__ import annotations

import datetime
import os
import socket
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "SINGLE",
    "Distributed",
    "chunk_sizes",
    "free_port",
    "init_from_env",
    "set_local_environment",
    "under_torchrun",
]


def under_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or anything else that sets ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for the rendezvous of processes spawned without ``torchrun``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def set_local_environment(rank: int, world: int, port: int) -> None:
    """Set the variables ``torchrun`` sets for ``rank`` of a ``world``-process job on this machine, so that a
    process spawned otherwise (``torch.multiprocessing.spawn`` in benchmarks and tests) joins with
    :func:`init_from_env` as a ``torchrun`` rank would."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def chunk_sizes(n: int, world: int) -> list[int]:
    """How ``n`` rows of a global batch split into ``world`` contiguous slices (the first ``n % world`` one
    longer), as :func:`torch.tensor_split` cuts: every rank derives every rank's size without asking."""
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


@dataclass
class Distributed:
    """This process's place in the process group (``world == 1``: one process, no group, no collectives)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    bytes_sent: int = field(default=0, compare=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, writes checkpoints and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, asked: str | torch.device | None) -> torch.device:
        """The device this rank trains on: ``cuda:LOCAL_RANK`` under a multi-process CUDA run.

        Raises:
            ValueError: CUDA asked for where this torch has no CUDA device.
        """
        if asked is not None and str(asked).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {asked!r} asked for, but this torch has no CUDA device")
        dev = torch.device(asked or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.active and dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", self.local_rank)
        return dev

    def local_slice(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` rows (see :func:`chunk_sizes`)."""
        sizes = chunk_sizes(n, self.world)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    def gather(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's ``local`` rows of an ``n``-row global batch, in rank order, carrying gradients.

        Uneven slices (a global batch not divisible by N, the epoch's last one) are padded to the longest,
        gathered, and cut back, since a gather needs equal shapes; the padding gets no gradient.
        """
        if not self.active:
            return local
        from torch.distributed.nn.functional import all_gather  # the gather whose backward sums the slices

        sizes = chunk_sizes(n, self.world)
        pad = max(sizes) - len(local)
        padded = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))]) if pad else local
        self.bytes_sent += 2 * padded.numel() * padded.element_size()  # the gather, and its backward
        with warnings.catch_warnings():  # torch 2.13 marks it deprecated; its successor is private API
            warnings.simplefilter("ignore", FutureWarning)
            parts = all_gather(padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every gradient by its mean over the ranks: one all-reduce of the flattened gradients."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.bytes_sent += flat.numel() * flat.element_size()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    @staticmethod
    def zero_loss(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
        """A loss of 0 whose backward gives every parameter a zero gradient: what a rank with no rows to learn
        from (fewer than 2 of an epoch's short last batch, per-rank negatives) backpropagates, so that its
        gradient all-reduce still holds every parameter, as the other ranks' does."""
        return sum(p.sum() for p in params) * 0.0

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (a copy; ``value`` itself is left alone)."""
        if not self.active:
            return value
        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable record: an epoch's validation, a report)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written the checkpoint the others will read)."""
        if self.active:
            dist.barrier()


SINGLE = Distributed()


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> Distributed:
    """Join the process group ``torchrun`` set up in the environment; :data:`SINGLE` outside ``torchrun``.

    ``backend`` defaults to NCCL when CUDA is available, else gloo. A group that is already initialised
    (by the caller, or a previous call) is reused, so calling this twice is harmless.

    Raises:
        ValueError: ``RANK`` / ``WORLD_SIZE`` are inconsistent (a rank outside the world).
    """
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if not under_torchrun():
        return SINGLE
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if chosen == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        chosen, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s)
    )
    return Distributed(rank, world, local_rank)
