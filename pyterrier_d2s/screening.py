"""Int8 screening of a head's vocabulary layer: which outputs of one query can be non-zero, from a quarter of
the bytes.

The head's last step is ``log(1 + relu(h·w_j + b_j))`` over |V| rows ``w_j``. For one query the float32 layer
(30,522 x 384: 47 MB, larger than the L3 cache) is read in full to find the few hundred ``j`` whose logit is
positive; reading dominates the time. :class:`Int8Screen` keeps an int8 copy ``q_j`` (per-row scale
``s_j = max|w_j| / 127``: 12 MB) and bounds its error: with ``e_j = w_j - s_j q_j``,

    |h·w_j - s_j (h·q_j)| <= ||h||_2 ||e_j||_2                          (Cauchy-Schwarz)

plus the float32 rounding of the int8 product, at most ``(ω + 4) 2^-23 · 127 s_j ||h||_1`` (a safe multiple
of the standard ``γ_ω`` bound). Every row whose screened logit plus this bound exceeds the limit is a
*candidate*; the caller computes the candidates exactly from the float32 rows. No row with a positive exact
logit is ever left out, so the output equals the full projection's up to float32 rounding: screening decides
which rows to compute, never a weight.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["Int8Screen"]

_ROUNDING = 2.0**-23


@numba.njit(cache=True, fastmath=True, nogil=True, inline="always")
def _may_exceed(q, scale, slack, bias, j, h, h_l2, round_coef, limit):  # pragma: no cover - compiled
    """Whether screened row ``j``'s logit can exceed ``limit``: its int8 logit plus the error bound."""
    acc = np.float32(0.0)
    for i in range(q.shape[1]):
        acc += np.float32(q[j, i]) * h[i]
    return scale[j] * acc + bias[j] + h_l2 * slack[j] + round_coef * scale[j] > limit


@numba.njit(cache=True, fastmath=True, nogil=True)
def _screen_rows(q, scale, slack, bias, h, h_l2, round_coef, limit, out):  # pragma: no cover - compiled
    """Positions j with ``s_j (q_j·h) + b_j + ||h||_2 ||e_j||_2 + rounding > limit`` written to ``out``."""
    n = 0
    for j in range(q.shape[0]):
        if _may_exceed(q, scale, slack, bias, j, h, h_l2, round_coef, limit):
            out[n] = j
            n += 1
    return n


@numba.njit(cache=True, fastmath=True, nogil=True)
def _screen_and_project(
    q, scale, slack, bias, rows, positions, weight, full_bias, h, h_l2, round_coef, limit, threshold, out_ids, out_vals
):  # pragma: no cover - compiled
    """The screen and the exact outputs in one pass over the screened rows at ``positions`` (ascending): a row
    that passes the bound is computed at once in float32 from its row of ``weight`` (|V| x ω) and kept when
    ``log(1 + x) > threshold``; returns the count written."""
    n = 0
    for t in range(positions.shape[0]):
        j = positions[t]
        if _may_exceed(q, scale, slack, bias, j, h, h_l2, round_coef, limit):
            r = rows[j]
            x = np.float32(0.0)
            for i in range(weight.shape[1]):
                x += weight[r, i] * h[i]
            x += full_bias[r]
            if x > 0:
                w = np.log1p(x)
                if w > threshold:
                    out_ids[n] = r
                    out_vals[n] = w
                    n += 1
    return n


class Int8Screen:
    """An int8 copy of the vocabulary rows ``rows`` of ``weight`` (|V| x ω) with the bound of its error.

    Args:
        weight: the float32 vocabulary layer (|V| x ω).
        bias: its bias (|V|).
        rows: the vocabulary ids screened (sorted; e.g. the allowed outputs, or the terms an index has).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, rows: np.ndarray):
        w = np.ascontiguousarray(weight[rows], dtype=np.float32)
        self.rows = np.asarray(rows, dtype=np.int64)
        amax = np.abs(w).max(axis=1) if len(w) else np.zeros(0, np.float32)
        self.scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        self.q = np.clip(np.rint(w / self.scale[:, None]), -127, 127).astype(np.int8)
        err = w.astype(np.float64) - self.q.astype(np.float64) * self.scale[:, None].astype(np.float64)
        # the error norm is rounded up, and the bias keeps a relative margin for the last few float32 ops
        self.err_l2 = (np.sqrt((err * err).sum(axis=1)) * (1 + 1e-6)).astype(np.float32)
        self.bias = np.asarray(bias[rows], dtype=np.float32)
        self.slack = self.err_l2 + (8 * _ROUNDING) * np.abs(self.bias)
        # vocabulary id -> screened position (-1: not screened), for projections onto a subset of the rows
        self.position = np.full(len(weight), -1, dtype=np.int64)
        self.position[self.rows] = np.arange(len(self.rows))
        self._every_position = np.arange(len(self.rows), dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes read per screened query (the int8 rows and the per-row scale, bias and bound)."""
        return self.q.nbytes + self.scale.nbytes + self.bias.nbytes + self.slack.nbytes

    def max_weight_error(self) -> float:
        """The largest ``|w_ji - s_j q_ji|`` of the int8 copy (at most half a quantisation step per row)."""
        return float(self.scale.max(initial=0.0) / 2)

    def candidates(self, hidden: np.ndarray, limit: float = 0.0) -> np.ndarray:
        """Vocabulary ids whose logit ``hidden·w_j + b_j`` may exceed ``limit`` (a superset of those that do)."""
        h, h_l2, round_coef = self._bound_terms(hidden)
        out = np.empty(len(self.rows), dtype=np.int64)  # per call: safe from several threads
        n = _screen_rows(
            self.q, self.scale, self.slack, self.bias, h, h_l2, round_coef, np.float32(limit), out
        )
        return self.rows[out[:n]]

    def _bound_terms(self, hidden: np.ndarray) -> tuple[np.ndarray, np.float32, np.float32]:
        h = np.ascontiguousarray(hidden, dtype=np.float32)
        h_l2 = np.float32(np.sqrt(float(h.astype(np.float64) @ h.astype(np.float64))) * (1 + 1e-6))
        round_coef = np.float32((h.shape[0] + 4) * _ROUNDING * 127.0 * float(np.abs(h).sum()))
        return h, h_l2, round_coef

    def project(
        self,
        hidden: np.ndarray,
        weight: np.ndarray,
        bias: np.ndarray,
        threshold: float = 0.0,
        columns: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary ids, weights ``log(1 + relu(hidden·w_j + b_j))`` above ``threshold``) of one hidden vector.

        ``weight`` / ``bias`` are the float32 layer this screen was built from (all |V| rows): the rows that
        pass the screen are computed from it in the same pass, so the result is the full projection's (ids
        ascending) up to float32 rounding, without gathering rows or a second call. ``columns`` (sorted
        vocabulary ids): only these are screened and computed (ids not screened are 0), so a projection onto a
        few thousand tokens reads only their int8 rows.
        """
        h, h_l2, round_coef = self._bound_terms(hidden)
        threshold = max(float(threshold), 0.0)
        limit = np.float32(np.expm1(threshold))  # log1p(x) > threshold  <=>  x > expm1(threshold)
        if columns is None:
            positions = self._every_position
        else:
            positions = self.position[columns]
            positions = positions[positions >= 0]
        ids = np.empty(len(positions), dtype=np.int32)  # per call: safe from several threads
        vals = np.empty(len(positions), dtype=np.float32)
        n = _screen_and_project(
            self.q,
            self.scale,
            self.slack,
            self.bias,
            self.rows,
            positions,
            np.ascontiguousarray(weight, dtype=np.float32),
            np.ascontiguousarray(bias, dtype=np.float32),
            h,
            h_l2,
            round_coef,
            limit,
            np.float32(threshold),
            ids,
            vals,
        )
        return ids[:n], vals[:n]
