"""Validation of the head after every epoch: caption→image R@1 and MRR with exact sparse scores, FLOPs."""

from __future__ import annotations

import torch
from torch import nn

from ..measures import flops_from_counts
from .compact_head import TokenRows
from .loss import sparse_scores

__all__ = ["validation_metrics"]


@torch.no_grad()
def validation_metrics(
    head: nn.Module,
    val_tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    val_own: TokenRows | None,
    bs: int,
) -> dict[str, float]:
    """Caption→image R@1 and MRR (full ranking) over exact sparse scores, FLOPs (Eq. 1), mean non-zeros.

    ``val_tensors`` are the validation captions' and images' dense vectors and each caption's image row, on
    the head's device; ``val_own`` masks the captions to their own tokens (a head trained without expansion
    is validated without it), ``bs`` is the batch size.

    The gold image must score above 0 to count (an inverted index never returns a score-0 image), and
    ties are ranked pessimistically, so a head that scores everything alike is not rewarded.
    """
    head.eval()
    z_cap, z_img, gold = val_tensors
    s_img = torch.cat([head(z_img[i : i + bs]) for i in range(0, len(z_img), bs)])
    d_counts = torch.count_nonzero(s_img, dim=0).double()
    q_counts = torch.zeros_like(d_counts)
    hits, rr, q_nnz = 0, 0.0, 0.0
    for i in range(0, len(z_cap), bs):
        rows = torch.arange(i, min(i + bs, len(z_cap)), device=z_cap.device)
        s_cap = head(z_cap[rows], mask=None if val_own is None else val_own.mask(rows))
        scores = sparse_scores(s_cap, s_img)
        g = gold[i : i + bs]
        gold_score = scores.gather(1, g[:, None]).squeeze(1)
        rank = (scores >= gold_score[:, None]).sum(dim=1)  # 1 = first; ties count against the gold
        found = gold_score > 0
        hits += int(((rank == 1) & found).sum())
        rr += float(
            torch.where(found, 1.0 / rank.double(), torch.zeros_like(gold_score, dtype=torch.double)).sum()
        )
        nz = torch.count_nonzero(s_cap, dim=0).double()
        q_counts += nz
        q_nnz += float(nz.sum())
    head.train()
    n_c, n_i = len(z_cap), len(z_img)
    return {
        "r1": hits / n_c,
        "mrr": rr / n_c,
        "flops": flops_from_counts(q_counts.cpu().numpy(), d_counts.cpu().numpy(), n_c, n_i),
        "q_nnz": q_nnz / n_c,
        "d_nnz": float(d_counts.sum()) / n_i,
    }
