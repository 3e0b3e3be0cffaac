"""The paper's figures: effectiveness vs efficiency across heads (Fig. 2a) and top-10 overlap with dense (Fig. 2b).

:func:`plot_tradeoff` and :func:`plot_overlap` draw them from head and index directories (``d2s plot``);
:func:`tradeoff_figure` and :func:`overlap_figure` from the numbers. Needs matplotlib (``pip install "pyterrier-d2s[plots]"``); figures are written with the Agg backend, so no
display is needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["overlap_figure", "plot_overlap", "plot_tradeoff", "tradeoff_figure"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('plots need matplotlib: pip install "pyterrier-d2s[plots]"') from e
    return plt


def tradeoff_figure(
    runs: Sequence[dict], out: str | os.PathLike, dense_r1: float | None = None, title: str | None = None
) -> None:
    """Fig. 2a: sparse R@1 against FLOPs (log scale), one point per head, labelled by η and exp.

    ``runs``: reports of ``d2s train`` (``sparse_r1``, ``flops``, ``eta``, ``exp``); ``dense_r1`` draws the
    dense model's R@1 as a horizontal line.
    """
    if not runs:
        raise ValueError("no runs to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    by_exp: dict[str, list[dict]] = {}
    for r in runs:
        by_exp.setdefault(str(r.get("exp", "?")), []).append(r)
    for exp, rs in sorted(by_exp.items()):
        rs = sorted(rs, key=lambda r: r["flops"])
        ax.plot([r["flops"] for r in rs], [r["sparse_r1"] for r in rs], "o-", label=f"D2S exp={exp}")
        for r in rs:
            ax.annotate(
                f"η={r.get('eta', '?'):g}",
                (r["flops"], r["sparse_r1"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    if dense_r1 is not None:
        ax.axhline(dense_r1, color="grey", linestyle="--", label=f"dense ({dense_r1:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs (Eq. 1, log scale)")
    ax.set_ylabel("R@1 (caption → image)")
    ax.set_title(title or "Effectiveness vs efficiency (Fig. 2a)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)


def overlap_figure(
    overlaps: Sequence[float], out: str | os.PathLike, k: int = 10, title: str | None = None
) -> None:
    """Fig. 2b: histogram over queries of the fraction of the dense top-k also in the sparse top-k."""
    values = np.asarray(overlaps, dtype=float)
    if values.size == 0:
        raise ValueError("no overlap values to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    bins = np.linspace(-0.5 / k, 1 + 0.5 / k, k + 2)
    ax.hist(values, bins=bins, weights=np.full(values.size, 1 / values.size), edgecolor="white")
    ax.axvline(values.mean(), color="black", linestyle="--", label=f"mean {values.mean():.2f}")
    ax.set_xlabel(f"fraction of the dense top-{k} in the sparse top-{k}")
    ax.set_ylabel("fraction of queries")
    ax.set_title(title or f"Top-{k} overlap of sparse and dense (Fig. 2b)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)


def plot_tradeoff(runs: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Fig. 2a of the heads in ``runs`` (directories written by ``d2s train``, read from their saved test
    reports) into the PNG ``out``, with their mean dense R@1 as the reference line.

    Returns ``out``, ``runs`` (how many) and ``points`` (``(flops, sparse_r1)`` per head, in order).
    """
    from .training_run import saved_test_report

    reports = [saved_test_report(run) for run in runs]
    tradeoff_figure(reports, out, dense_r1=float(np.mean([r["dense_r1"] for r in reports])))
    return {"out": out, "runs": len(reports), "points": [(r["flops"], r["sparse_r1"]) for r in reports]}


def plot_overlap(
    model: str | os.PathLike,
    index: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    k: int = 10,
) -> dict:
    """Fig. 2b of the head in ``model`` searching ``index``, on its test captions of ``data``, into ``out``.

    Returns ``out``, ``queries`` and ``mean_overlap@<k>``.
    """
    from .index_evaluation import dense_overlaps

    overlaps = dense_overlaps(model, index, data, k=k)
    overlap_figure(overlaps.to_numpy(), out, k=k)
    return {"out": out, "queries": len(overlaps), f"mean_overlap@{k}": float(overlaps.mean())}
