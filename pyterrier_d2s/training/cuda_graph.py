"""One training step replayed as a CUDA graph.

A D2S step is ~130 small kernels (two head passes, Eq. 7, backward, AdamW) over B x |V| matrices; on a GPU
it is bound by the host launching them (≈6 ms a step on an H100 host vs ≈2 ms of GPU work). Capturing the
step once and replaying it removes the launch cost. The step's inputs live in static buffers that the
trainer updates in place (batch rows, schedule values); the expansion draws come from a generator that is
registered with the graph, so every replay draws fresh masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["GraphedStep"]


class GraphedStep:
    """Runs ``step_fn(rows)`` (forward, backward and optimiser step) and returns its loss tensor.

    The first ``warmup`` calls run eagerly on a side stream (to create the optimiser state and library
    handles outside the capture, as CUDA-graph capture requires); the next call captures the step and
    every later call with a batch of the same size replays it. Calls with another batch size (the last,
    shorter batch of an epoch) run eagerly.

    Args:
        step_fn: computes the loss of the batch ``rows``, calls ``backward`` and the optimiser step; the
            gradients must be ``None`` on entry (they are set to ``None`` before every eager call).
        optimizer: the optimiser ``step_fn`` steps (built with ``capturable=True``).
        batch_size: the batch size that is captured.
        generators: device generators ``step_fn`` draws from.
        warmup: eager calls before the capture.
    """

    def __init__(
        self,
        step_fn: Callable[[torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        device: torch.device,
        generators: Sequence[torch.Generator] = (),
        warmup: int = 3,
    ):
        self.step_fn = step_fn
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.generators = list(generators)
        self.warmup = warmup
        self.rows = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None
        self.eager_calls = 0

    @staticmethod
    def supported(device: torch.device) -> bool:
        return device.type == "cuda" and hasattr(torch.cuda.CUDAGraph, "register_generator_state")

    def _eager(self, rows: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self.step_fn(rows)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        if len(rows) != self.batch_size:
            return self._eager(rows)
        if self.graph is not None:
            self.rows.copy_(rows)
            self.graph.replay()
            return self.loss
        if self.eager_calls < self.warmup:
            self.eager_calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self._eager(rows)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        # capture records the kernels without running them; the replay right after runs this step
        self.rows.copy_(rows)
        self.optimizer.zero_grad(set_to_none=True)  # backward then writes the graph's own gradient buffers
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            self.loss = self.step_fn(self.rows)
        self.graph = graph
        graph.replay()
        return self.loss
