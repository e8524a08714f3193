"""Attention over the compressed KV cache (mirrors tqref.reference.attention.attend).

One work item per (batch, attention head, query position), spread with ``prange``: build
the query's lookup tables (estimators.py), score the visible keys from their packed codes,
softmax in float32 exactly as the reference writes it (scale, max-subtract, exp, divide by
the sum), then accumulate ‖v_t‖·w_t·c_v[idx] from the packed value codes, 16 tokens at a
time (decoded into a tile by _tile.unpack_tile, one lane-vector multiply-add per row). Neither
keys nor values are ever dequantized. Float output: compared with a tolerance.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import _simd as S
from . import _tile as T
from ._jit import TILE, kernel
from .estimators import fill_table, scan_key, scan_keys4

_F32 = np.float32
L = TILE


@kernel
def attend_kernel(q_rot, q_proj, key_idx, key_norms, key_signs, key_gammas, val_idx, val_norms,
                  key_table, key_bits, key_p, val_table, val_bits, kappa, prod_mode,
                  scale, value_scale, group_size, causal, start, lag, key_fields, key_entries, sign_fields,
                  out, lse, nchunks):
    nb, na, lq, d = q_rot.shape
    t_len = key_idx.shape[2]
    nbk = key_idx.shape[3]
    nbs = key_signs.shape[3]
    items = nb * na * lq
    pm = np.empty(2, _F32)
    pm[0] = -1.0
    pm[1] = 1.0
    for c in prange(nchunks):
        lut = np.empty((key_fields, key_entries), _F32)
        slut = np.empty((sign_fields, 256), _F32)
        scores = np.empty(t_len, _F32)
        acc = np.empty(d, _F32)
        s4 = np.empty(4, _F32)
        c4 = np.empty(4, _F32)
        acc16 = np.empty((d, L), _F32)
        vbuf = np.empty(((d + 7) // 8 * 8, L), _F32)
        rowbuf = np.empty((L, d), _F32)
        lanes = np.empty(L, _F32)
        word = np.empty(L, np.uint64)
        for item in range(c * items // nchunks, (c + 1) * items // nchunks):
            b = item // (na * lq)
            a = (item // lq) % na
            i = item % lq
            h = a // group_size
            visible = t_len
            if causal:
                visible = min(t_len, t_len - lq + i + 1 - lag)
            if visible <= start:
                for j in range(d):
                    out[b, a, i, j] = np.float32(0.0)
                lse[b, a, i] = np.float32(-np.inf)
                continue
            fill_table(q_rot[b, a, i], key_table, key_bits, key_p, lut)
            if prod_mode:
                fill_table(q_proj[b, a, i], pm, 1, 8, slut)
            kidx = key_idx[b, h]
            ksgn = key_signs[b, h]
            peak = np.float32(-np.inf)
            t = start
            while t < visible:
                k = 4 if t + 4 <= visible else 1
                if k == 4:
                    scan_keys4(lut, kidx, t, key_bits, key_p, nbk, s4)
                    if prod_mode:
                        scan_keys4(slut, ksgn, t, 1, 8, nbs, c4)
                else:
                    s4[0] = scan_key(lut, kidx, t, key_bits, key_p, nbk)
                    if prod_mode:
                        c4[0] = scan_key(slut, ksgn, t, 1, 8, nbs)
                for u in range(k):
                    s = s4[u]
                    if prod_mode:
                        s = s + c4[u] * (kappa * key_gammas[b, h, t + u])
                    logit = (s * key_norms[b, h, t + u]) * scale
                    scores[t + u] = logit
                    if logit > peak:
                        peak = logit
                t += k
            total = np.float32(0.0)
            for t in range(start, visible):
                e = np.exp(scores[t] - peak)
                scores[t] = e
                total += e
            # values, 16 tokens per tile: acc16[j, l] += (w_t · ‖v_t‖) · c_v[idx_tj]
            acc16[:, :] = np.float32(0.0)
            vidx = val_idx[b, h]
            vn = val_norms[b, h]
            for t0 in range(start, visible, L):
                cnt = min(L, visible - t0)
                for u in range(L):
                    lanes[u] = (scores[t0 + u] / total) * vn[t0 + u] if u < cnt else np.float32(0.0)
                T.unpack_tile(vidx, t0, cnt, val_bits, d, val_table, vbuf, rowbuf, word)
                for j in range(d):
                    S.acc_mul_lanes(acc16, j, vbuf, j, lanes)
            for j in range(d):
                s = np.float32(0.0)
                for u in range(L):
                    s += acc16[j, u]
                acc[j] = s
            for j in range(d):
                out[b, a, i, j] = acc[j] * value_scale
            lse[b, a, i] = peak + np.log(total)
