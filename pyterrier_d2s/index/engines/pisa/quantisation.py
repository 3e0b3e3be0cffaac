"""Integer quantisation of sparse weights for the PISA engine, and the score error it causes.

PISA stores integer impacts. A document weight ``d`` is stored as ``D = floor(s * d)`` (document scale ``s``)
and a query weight ``q`` is sent as ``Q = floor(t * q)`` copies of the term (query scale ``t``); with the
``quantized`` scorer PISA's score of a document is ``S = sum_k Q_k * D_k``, accumulated in float32. The D2S
index reports ``P = fl32(S) / (s * t)`` so that PISA scores are in the same units as the exact float dot
product ``E = sum_k q_k * d_k``.

Error bound
-----------
Write ``q = (Q + e) / t`` and ``d = (D + f) / s`` with ``e, f`` in ``[0, 1)``. Per co-activated term::

    q*d - Q*D/(s*t) = q*f/s + d*e/t - e*f/(s*t)    which lies in  [0, q/s + d/t)

(each weight loses less than one quantum on its own side; the cross term only makes the error smaller).
Terms whose weight truncates to 0 on either side fall under the same formula. PISA then sums the ``n``
products in float32 (unit round-off ``u = 2**-24``); by the standard summation bound the float32 result is
within ``gamma_{n+1} * S`` of the integer sum, ``gamma_m = m*u / (1 - m*u)``. Hence, for a query ``q`` and
a document ``d`` sharing the ``n`` terms ``K = q ∩ d``::

    -gamma_{n+1} * E  <=  E - P  <  sum_{k in K} (q_k / s + d_k / t) + gamma_{n+1} * E

:func:`pair_error_bound` computes the right-hand side for one pair and :func:`query_error_bound` a bound for
a query against *any* document of the index (using each term's largest document weight ``m_k``)::

    B(q) = sum_{k in q} (q_k / s + m_k / t) + gamma_{|q|+1} * sum_{k in q} q_k * m_k

Consequences used by the tests: every PISA score is within ``B(q)`` of the exact score, and a document can
only swap in or out of PISA's top-k (relative to the exact top-k) if its exact score is within ``2 B(q)`` of
the exact k-th score. Documents whose every shared term truncates to 0 are not retrieved by PISA at all;
their exact score is below the same bound.

Choosing scales
---------------
The fraction of weight mass lost to truncation with scale ``s`` is
``L(s) = sum(w - floor(s*w)/s) / sum(w)``; since each weight loses less than ``1/s``, ``L(s) < 1/(s * mean(w))``.
:func:`choose_scale` returns the smallest scale of :data:`SCALE_LADDER` with ``L(s) < max_mass_loss`` on the
weights it is given. Small scales are preferred because the query side is sent as ``Q`` repeated terms, so
the query scale directly drives the per-query parsing cost in PISA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = [
    "FLOAT32_UNIT_ROUNDOFF",
    "SCALE_LADDER",
    "choose_scale",
    "gamma",
    "mass_loss",
    "pair_error_bound",
    "quantise",
    "query_error_bound",
]

#: Candidate scales, 1-2-5 steps from 1 to 5e6: round numbers keep the stored integers readable.
SCALE_LADDER: tuple[float, ...] = tuple(float(m * 10**e) for e in range(7) for m in (1, 2, 5))

#: PISA accumulates scores in float32.
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def quantise(weights: np.ndarray, scale: float) -> np.ndarray:
    """Integer impacts ``floor(scale * w)`` as PISA sees them (float64 arithmetic, as Python's ``int(w*s)``).

    Args:
        weights: non-negative weights (any float dtype).
        scale: quantisation scale (> 0).

    Returns:
        an int64 array of the same shape.
    """
    return np.floor(np.asarray(weights, dtype=np.float64) * float(scale)).astype(np.int64)


def mass_loss(weights: np.ndarray | Iterable[float], scale: float) -> float:
    """Fraction of the total (positive) weight mass lost by ``floor(scale * w) / scale`` truncation.

    Args:
        weights: the weights (e.g. ``csr.data`` or all values of a batch of query dicts).
        scale: quantisation scale.

    Returns:
        lost mass / total mass, in [0, 1]; 0.0 when there is no mass.
    """
    w = np.asarray(weights if isinstance(weights, np.ndarray) else list(weights), dtype=np.float64)
    w = w[w > 0]
    total = float(w.sum())
    if total == 0.0:
        return 0.0
    kept = float(quantise(w, scale).sum()) / float(scale)
    return max(0.0, (total - kept) / total)


def choose_scale(
    weights: np.ndarray | Iterable[float],
    max_mass_loss: float = 0.005,
    ladder: Iterable[float] = SCALE_LADDER,
) -> float:
    """Smallest scale of ``ladder`` whose truncation loses less than ``max_mass_loss`` of the weight mass.

    Args:
        weights: a representative set of weights (all document weights, or a sample of query weights).
        max_mass_loss: the largest acceptable lost fraction (exclusive), e.g. 0.005 for 0.5 %.
        ladder: candidate scales, tried in increasing order.

    Raises:
        ValueError: if no candidate scale is fine enough.
    """
    if not 0.0 < max_mass_loss < 1.0:
        raise ValueError(f"max_mass_loss must be in (0, 1), got {max_mass_loss}")
    w = np.asarray(weights if isinstance(weights, np.ndarray) else list(weights), dtype=np.float64)
    for scale in sorted(ladder):
        if mass_loss(w, scale) < max_mass_loss:
            return float(scale)
    raise ValueError(f"no scale in {tuple(ladder)} loses less than {max_mass_loss:.3%} of the weight mass")


def gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)``: relative error bound of an n-term float32 sum (Higham, Thm 4.2)."""
    nu = n * FLOAT32_UNIT_ROUNDOFF
    return nu / (1.0 - nu) if nu < 1.0 else math.inf


def pair_error_bound(q: np.ndarray, d: np.ndarray, doc_scale: float, query_scale: float) -> float:
    """Bound on ``|E - P|`` for one query/document pair (see the module docstring).

    Args:
        q: query weights of the co-activated terms (aligned with ``d``).
        d: document weights of the same terms.
        doc_scale: the index's document scale ``s``.
        query_scale: the query scale ``t`` used at retrieval.
    """
    q = np.asarray(q, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    exact = float(q @ d)
    return float((q / doc_scale + d / query_scale).sum()) + gamma(len(q) + 1) * exact


def query_error_bound(
    query_toks: Mapping[str, float],
    term_max: Mapping[str, float],
    doc_scale: float,
    query_scale: float,
) -> float:
    """Bound ``B(q)`` on ``|E - P|`` for a query against any document of an index.

    Args:
        query_toks: the query ``{term: weight}``.
        term_max: the largest document weight of each indexed term; unknown terms cannot contribute.
        doc_scale: the index's document scale ``s``.
        query_scale: the query scale ``t`` used at retrieval.
    """
    pairs = [(float(w), float(term_max[k])) for k, w in query_toks.items() if w > 0 and k in term_max]
    if not pairs:
        return 0.0
    q, m = np.array(pairs).T
    return float((q / doc_scale + m / query_scale).sum()) + gamma(len(q) + 1) * float(q @ m)
