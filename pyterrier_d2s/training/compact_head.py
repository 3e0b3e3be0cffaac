"""The head as training sees it: restricted to its output columns, and the captions' own tokens as masks.

:class:`TrainingHead` computes :class:`D2SHead`'s maths on the allowed output columns only (a step then
touches a thousand rows of W2 instead of 30,522) and writes the trained weights back into the full head;
:class:`TokenRows` builds a batch's B x |V| own-token mask on the device; :func:`pca_init_` sets W1 to the
training vectors' principal directions (``proj_init="pca"``).
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..head import D2SHead, sparse_projection
from .regularisers import dropout_mask, perturb_inputs

__all__ = ["TokenRows", "TrainingHead", "pca_init_"]


class TokenRows:
    """Captions' own token ids, padded to one row per caption on the device, to build B x |V| masks.

    A batch's mask is one scatter with no host synchronisation (a CSR gather needs the batch's total
    length on the host). Padding points at an extra column that is cut off afterwards.
    """

    def __init__(self, own: sp.csr_matrix, device: torch.device):
        lengths = np.diff(own.indptr)
        self.vocab_size = own.shape[1]
        width = max(1, int(lengths.max(initial=0)))
        padded = np.full((own.shape[0], width), self.vocab_size, dtype=np.int32)
        padded[np.arange(width) < lengths[:, None]] = own.indices  # row-major order = CSR order
        self.padded = torch.from_numpy(padded).to(device)

    def mask(self, rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The 0/1 own-token mask (len(rows) x |V|) of the captions ``rows`` (a tensor on the device)."""
        out = torch.zeros(len(rows), self.vocab_size + 1, dtype=dtype, device=rows.device)
        out.scatter_(1, self.padded[rows].long(), 1)
        return out[:, : self.vocab_size]


class TrainingHead(nn.Module):
    """The head restricted to its allowed output columns, for training.

    Same maths as :class:`D2SHead` on those columns (every other column is zero anyway), with W2 and b2
    holding only their rows, so a step's projection, its backward pass and AdamW touch ``len(columns)`` rows
    instead of |V|. :meth:`write_into` copies the trained weights back into the full head.
    """

    def __init__(self, head: D2SHead, columns: np.ndarray):
        super().__init__()
        self.proj = copy.deepcopy(head.proj)
        self.norm = copy.deepcopy(head.norm)
        idx = torch.from_numpy(columns)
        self.vocab_proj = nn.Linear(head.config.hidden_dim, len(columns))
        with torch.no_grad():
            self.vocab_proj.weight.copy_(head.vocab_proj.weight[idx])
            self.vocab_proj.bias.copy_(head.vocab_proj.bias[idx])
        self.register_buffer("keep_mask", torch.ones(len(columns)), persistent=False)
        self.columns = columns
        # training-time noise (TrainConfig.hidden_dropout / input_noise / input_dropout), drawn from
        # ``generator``; none in eval mode, so validation and the returned head are deterministic
        self.hidden_dropout = 0.0
        self.input_noise = 0.0
        self.input_dropout = 0.0
        self.generator: torch.Generator | None = None

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = self.keep_mask if mask is None else mask * self.keep_mask
        if self.training:
            z = perturb_inputs(z, self.input_noise, self.input_dropout, self.generator)
        hidden = self.norm(self.proj(z))
        if self.training and self.hidden_dropout:
            hidden = hidden * dropout_mask(
                hidden.shape, self.hidden_dropout, self.generator, hidden.device
            ).to(hidden.dtype)
        return sparse_projection(hidden, self.vocab_proj.weight, self.vocab_proj.bias, keep)

    @torch.no_grad()
    def write_into(self, head: D2SHead, state: dict[str, torch.Tensor]) -> None:
        """Load ``state`` (a state dict of this module) into the full ``head``'s columns."""
        idx = torch.from_numpy(self.columns)
        for name in ("proj.weight", "proj.bias", "norm.weight", "norm.bias"):
            head.state_dict()[name].copy_(state[name])
        head.vocab_proj.weight[idx] = state["vocab_proj.weight"].to(head.vocab_proj.weight.dtype)
        head.vocab_proj.bias[idx] = state["vocab_proj.bias"].to(head.vocab_proj.bias.dtype)


@torch.no_grad()
def pca_init_(proj: nn.Linear, vectors: np.ndarray) -> None:
    """Set ``proj`` (W1, d -> ω) to the projection onto the leading principal directions of ``vectors``.

    ``W1 z + b`` is then the centred vector in its top-ω principal coordinates, so the head starts from the
    dense geometry instead of a random projection of it; rows past the rank of ``vectors`` stay zero.
    """
    z = np.asarray(vectors, dtype=np.float64)
    mean = z.mean(axis=0)
    _, sv, vt = np.linalg.svd(z - mean, full_matrices=False)
    weight = np.zeros((proj.out_features, proj.in_features))
    rank = int((sv > 1e-8 * max(float(sv[0]) if len(sv) else 0.0, 1e-30)).sum())
    m = min(proj.out_features, rank)
    weight[:m] = vt[:m]
    proj.weight.copy_(torch.from_numpy(weight).to(proj.weight.dtype))
    proj.bias.copy_(torch.from_numpy(-(weight @ mean)).to(proj.bias.dtype))
