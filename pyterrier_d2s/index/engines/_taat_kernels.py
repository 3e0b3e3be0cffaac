"""The numba kernels of the ``taat`` engine (imported lazily: numba compiles or loads its cache on first use).

See :mod:`pyterrier_d2s.index.engines.taat` for the algorithm.
"""

import math

import numba
import numpy as np

#: Relative slack on bounds against float32 rounding (far larger than the rounding of a few hundred terms).
MARGIN = 1e-4

_njit = numba.njit(nogil=True, cache=True, boundscheck=False)
# fused multiply-add and reassociation for the bound pass: both stay within the float32 error that MARGIN covers
# (no "nnan"/"ninf": weights are checked to be finite, but the compiler need not assume it)
_njit_contract = numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"contract", "reassoc"})


@_njit
def exact_score(d, f_indptr, f_indices, f_data, qdense):
    """float32 dot product of forward row d with the dense query (four partial sums, then combined)."""
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    p = f_indptr[d]
    e = f_indptr[d + 1]
    while p + 3 < e:
        s0 += qdense[f_indices[p]] * f_data[p]
        s1 += qdense[f_indices[p + 1]] * f_data[p + 1]
        s2 += qdense[f_indices[p + 2]] * f_data[p + 2]
        s3 += qdense[f_indices[p + 3]] * f_data[p + 3]
        p += 4
    while p < e:
        s0 += qdense[f_indices[p]] * f_data[p]
        p += 1
    return (s0 + s1) + (s2 + s3)


@_njit
def exact_score2(d, e, f_indptr, f_indices, f_data, qdense):
    """exact_score of two documents, their rows read in an interleaved loop (twice the loads in flight).

    Each document's sums run in exactly the same order as in exact_score, so the results are bitwise equal.
    """
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    b0 = np.float32(0.0)
    b1 = np.float32(0.0)
    b2 = np.float32(0.0)
    b3 = np.float32(0.0)
    p = f_indptr[d]
    pe = f_indptr[d + 1]
    q = f_indptr[e]
    qe = f_indptr[e + 1]
    while p + 3 < pe and q + 3 < qe:
        a0 += qdense[f_indices[p]] * f_data[p]
        b0 += qdense[f_indices[q]] * f_data[q]
        a1 += qdense[f_indices[p + 1]] * f_data[p + 1]
        b1 += qdense[f_indices[q + 1]] * f_data[q + 1]
        a2 += qdense[f_indices[p + 2]] * f_data[p + 2]
        b2 += qdense[f_indices[q + 2]] * f_data[q + 2]
        a3 += qdense[f_indices[p + 3]] * f_data[p + 3]
        b3 += qdense[f_indices[q + 3]] * f_data[q + 3]
        p += 4
        q += 4
    while p + 3 < pe:
        a0 += qdense[f_indices[p]] * f_data[p]
        a1 += qdense[f_indices[p + 1]] * f_data[p + 1]
        a2 += qdense[f_indices[p + 2]] * f_data[p + 2]
        a3 += qdense[f_indices[p + 3]] * f_data[p + 3]
        p += 4
    while p < pe:
        a0 += qdense[f_indices[p]] * f_data[p]
        p += 1
    while q + 3 < qe:
        b0 += qdense[f_indices[q]] * f_data[q]
        b1 += qdense[f_indices[q + 1]] * f_data[q + 1]
        b2 += qdense[f_indices[q + 2]] * f_data[q + 2]
        b3 += qdense[f_indices[q + 3]] * f_data[q + 3]
        q += 4
    while q < qe:
        b0 += qdense[f_indices[q]] * f_data[q]
        q += 1
    return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)


@_njit
def worse(s1, r1, s2, r2):
    # (s1, r1) ranks below (s2, r2): lower score, or same score and later row
    return s1 < s2 or (s1 == s2 and r1 > r2)


@_njit
def heap_push(hs, hr, n, k, s, r):
    """Offer (s, r) to a min-heap (worst on top) of capacity k holding n items; returns the new n."""
    if n < k:
        i = n
        n += 1
        while i > 0:
            par = (i - 1) >> 1
            if worse(s, r, hs[par], hr[par]):
                hs[i] = hs[par]
                hr[i] = hr[par]
                i = par
            else:
                break
        hs[i] = s
        hr[i] = r
        return n
    if worse(hs[0], hr[0], s, r):
        sift_down(hs, hr, k, s, r)
    return n


@_njit
def sift_down(hs, hr, size, s, r):
    """Put (s, r) into the root slot of a min-heap of ``size`` items (the root's old item is dropped)."""
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and worse(hs[c + 1], hr[c + 1], hs[c], hr[c]):
            c += 1
        if worse(hs[c], hr[c], s, r):
            hs[i] = hs[c]
            hr[i] = hr[c]
            i = c
        else:
            break
    hs[i] = s
    hr[i] = r


@_njit_contract
def upper_bounds(qt, qw, slot, step, dense, p_indptr, p_docs, p_w, acc, block):
    n_docs = acc.shape[0]
    m = qt.shape[0]
    dq = np.empty(m, np.int64)
    dw = np.empty(m, np.float32)
    sw = np.empty(m, np.float32)
    cur = np.empty(m, np.int64)
    end = np.empty(m, np.int64)
    nd = 0
    ns = 0
    for j in range(m):
        t = qt[j]
        if slot[t] >= 0:
            dq[nd] = slot[t]
            dw[nd] = qw[j] * step[slot[t]]
            nd += 1
        elif p_indptr[t + 1] > p_indptr[t]:
            sw[ns] = qw[j]
            cur[ns] = p_indptr[t]
            end[ns] = p_indptr[t + 1]
            ns += 1
    for b0 in range(0, n_docs, block):
        b1 = min(n_docs, b0 + block)
        a = acc[b0:b1]
        size = b1 - b0
        j = 0
        # four byte columns per pass over the block's bounds (a quarter of the loads and stores of a[])
        while j + 3 < nd:
            c0 = dense[dq[j], b0:b1]
            c1 = dense[dq[j + 1], b0:b1]
            c2 = dense[dq[j + 2], b0:b1]
            c3 = dense[dq[j + 3], b0:b1]
            w0 = dw[j]
            w1 = dw[j + 1]
            w2 = dw[j + 2]
            w3 = dw[j + 3]
            if j == 0:
                for i in range(size):
                    a[i] = (w0 * np.float32(c0[i]) + w1 * np.float32(c1[i])) + (
                        w2 * np.float32(c2[i]) + w3 * np.float32(c3[i])
                    )
            else:
                for i in range(size):
                    a[i] += (w0 * np.float32(c0[i]) + w1 * np.float32(c1[i])) + (
                        w2 * np.float32(c2[i]) + w3 * np.float32(c3[i])
                    )
            j += 4
        if j == 0:
            a[:] = 0.0
        while j < nd:
            c0 = dense[dq[j], b0:b1]
            w0 = dw[j]
            for i in range(size):
                a[i] += w0 * np.float32(c0[i])
            j += 1
        # the rare terms' postings falling in this block (binary search for the block's end: docids are sorted),
        # added while the block's bounds are still in L1
        for j in range(ns):
            p = cur[j]
            e = end[j]
            if p == e or p_docs[p] >= b1:
                continue
            if p_docs[e - 1] >= b1:
                e = p + np.searchsorted(p_docs[p:e], b1)
            w = sw[j]
            for q in range(p, e):
                acc[p_docs[q]] += w * p_w[q]
            cur[j] = e


@_njit
def collect(acc, lo, hi, cand, ub, c):
    """Append documents with lo <= acc < hi and acc > 0 to (cand, ub) from position c; returns the new c.

    Rows of 64 bounds none of which reaches ``lo`` (most of them) are skipped after a vectorised count.
    """
    n = acc.shape[0]
    floor = max(lo, np.float32(1e-38))
    nf = n // 64
    rows = acc[: nf * 64].reshape((nf, 64))
    for j in range(nf):
        row = rows[j]
        hits = 0
        for i in range(64):
            hits += row[i] >= floor
        if hits == 0:
            continue
        for i in range(64):
            v = row[i]
            if v >= floor and v < hi:
                cand[c] = j * 64 + i
                ub[c] = v
                c += 1
    for d in range(nf * 64, n):
        v = acc[d]
        if v >= floor and v < hi:
            cand[c] = d
            ub[c] = v
            c += 1
    return c


@_njit
def order_by_bound(ub, c, lo, top):
    """Counting sort of ub[:c] (values in [lo, top]) into 256 equal-width buckets, largest values first.

    Returns (order, starts): the indices of bucket b are order[starts[b]:starts[b + 1]], in any order; every
    value in bucket b is at most ``lo + width * (257 - b)`` (one width of slack covers float rounding).
    """
    width = (top - lo) / 256.0
    starts = np.zeros(257, np.int64)
    bucket = np.empty(c, np.int64)
    for i in range(c):
        b = 0
        if width > 0:
            b = min(255, max(0, 255 - int((ub[i] - lo) / width)))
        bucket[i] = b
        starts[b + 1] += 1
    for b in range(256):
        starts[b + 1] += starts[b]
    pos = starts[:256].copy()
    order = np.empty(c, np.int64)
    for i in range(c):
        order[pos[bucket[i]]] = i
        pos[bucket[i]] += 1
    return order, starts, width


@_njit
def kth_largest_strided(acc, stride, r):
    """The r-th largest of acc[::stride] (a min-heap of the r largest seen)."""
    heap = np.empty(r, np.float32)
    n = 0
    for d in range(0, acc.shape[0], stride):
        v = acc[d]
        if n < r:
            i = n
            n += 1
            while i > 0:
                par = (i - 1) >> 1
                if heap[par] > v:
                    heap[i] = heap[par]
                    i = par
                else:
                    break
            heap[i] = v
        elif v > heap[0]:
            i = 0
            while True:
                c = 2 * i + 1
                if c >= r:
                    break
                if c + 1 < r and heap[c + 1] < heap[c]:
                    c += 1
                if heap[c] < v:
                    heap[i] = heap[c]
                    i = c
                else:
                    break
            heap[i] = v
    return heap[0]


@_njit
def select(acc, k, f_indptr, f_indices, f_data, qdense, cand, ub, out_rows, out_scores):
    """Exact top-k from the bounds in acc (see the module docstring); returns the number of results."""
    n_docs = acc.shape[0]
    stride = max(1, n_docs // 4096)
    ns = (n_docs + stride - 1) // stride
    r = min(ns, int(math.ceil(2.0 * k * ns / n_docs)) + 2)
    if r >= ns:
        tau = np.float32(0.0)
    else:
        tau = kth_largest_strided(acc, stride, r)
    hi = np.float32(np.inf)
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    n = 0
    while True:
        c = collect(acc, tau, hi, cand, ub, 0)
        done = False
        if c > 0:
            top = ub[0]
            for i in range(c):
                top = max(top, ub[i])
            order, starts, width = order_by_bound(ub, c, tau, top)
            for b in range(256):
                if n == k and tau + width * (257 - b) < hs[0] * (1.0 - MARGIN):
                    done = True
                    break
                i = starts[b]
                stop = starts[b + 1]
                while i < stop:
                    # a bound below the k-th exact score (less the margin) cannot win: skip without scoring
                    j = order[i]
                    i += 1
                    if n == k and ub[j] < hs[0] * (1.0 - MARGIN):
                        continue
                    j2 = -1
                    while i < stop:
                        jj = order[i]
                        i += 1
                        if n == k and ub[jj] < hs[0] * (1.0 - MARGIN):
                            continue
                        j2 = jj
                        break
                    d = cand[j]
                    if j2 < 0:
                        n = heap_push(hs, hr, n, k, exact_score(d, f_indptr, f_indices, f_data, qdense), d)
                    else:
                        d2 = cand[j2]
                        s1, s2 = exact_score2(d, d2, f_indptr, f_indices, f_data, qdense)
                        n = heap_push(hs, hr, n, k, s1, d)
                        n = heap_push(hs, hr, n, k, s2, d2)
        if done or tau <= 0.0:
            break
        # every document with a bound >= tau was considered; those below tau may still qualify
        if n == k:
            lower = hs[0] * (1.0 - MARGIN)
            if lower >= tau:
                break
        else:
            lower = np.float32(0.0)
        hi = tau
        tau = lower
    # heap -> best first, ties by row
    for i in range(n - 1, -1, -1):
        out_scores[i] = hs[0]
        out_rows[i] = hr[0]
        sift_down(hs, hr, i, hs[i], hr[i])  # the last item replaces the root; the heap shrinks to i items
    # drop documents whose exact score is not positive (their bound was, but float32 underflowed)
    m = n
    while m > 0 and out_scores[m - 1] <= 0.0:
        m -= 1
    return m


@_njit
def search_many(
    q_indptr,
    q_terms,
    q_weights,
    k,
    slot,
    step,
    dense,
    p_indptr,
    p_docs,
    p_w,
    f_indptr,
    f_indices,
    f_data,
    block,
    acc,
    qdense,
    cand,
    ub,
    out_rows,
    out_scores,
    counts,
):
    """Top-k of each query of a CSR batch into out_rows/out_scores[qi, :counts[qi]].

    acc, cand, ub (one entry per document) and qdense (one per term, all zero) are work buffers; qdense is
    left all zero again.
    """
    for qi in range(q_indptr.shape[0] - 1):
        lo = q_indptr[qi]
        hi = q_indptr[qi + 1]
        if hi == lo:
            counts[qi] = 0
            continue
        qt = q_terms[lo:hi]
        qw = q_weights[lo:hi]
        upper_bounds(qt, qw, slot, step, dense, p_indptr, p_docs, p_w, acc, block)
        for j in range(hi - lo):
            qdense[qt[j]] = qw[j]
        counts[qi] = select(
            acc, k, f_indptr, f_indices, f_data, qdense, cand, ub, out_rows[qi], out_scores[qi]
        )
        for j in range(hi - lo):
            qdense[qt[j]] = 0.0


@_njit
def rescore(q_indptr, q_terms, q_weights, qpos, rows, f_indptr, f_indices, f_data, n_terms, out):
    """Exact scores of (query qpos[i], document rows[i]) pairs; pairs grouped by query."""
    qdense = np.zeros(n_terms, np.float32)
    i = 0
    n = qpos.shape[0]
    while i < n:
        q = qpos[i]
        lo = q_indptr[q]
        hi = q_indptr[q + 1]
        for j in range(lo, hi):
            qdense[q_terms[j]] = q_weights[j]
        while i < n and qpos[i] == q:
            out[i] = exact_score(rows[i], f_indptr, f_indices, f_data, qdense)
            i += 1
        for j in range(lo, hi):
            qdense[q_terms[j]] = 0.0
