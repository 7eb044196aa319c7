"""TSV-M, Iso-C and Iso-CTS as the authors' code computes them, on one 2-D task-vector tensor per
input, in float64.

Follows danielm1405/iso-merging, ``src/utils/TSVM_utils.py`` (``compute_and_sum_svd_mem_reduction``,
TSV-M as in AntoAndGar/task_singular_vectors: per task the top int(r/T) singular triplets placed in
zero-padded sums, the sums of U and V replaced by their polar factors from SVDs) and
``src/utils/iso.py`` (``iso_c``: the sum with its spectrum set to the mean singular value;
``iso_cts``: the common space from the sum's top singular vectors, int(r·fraction) adjusted so the
rest splits evenly among the tasks, each task's top directions with the common space projected out,
both bases orthogonalized, the spectrum flattened).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _polar(x: Tensor) -> Tensor:
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh


def tsv(vectors: list[Tensor]) -> Tensor:
    tvs = [v.double() for v in vectors]
    keep = int(min(tvs[0].shape) * (1 / len(tvs)))
    sum_u = sum_s = sum_v = None
    for i, tv in enumerate(tvs):
        u, s, v = torch.linalg.svd(tv, full_matrices=False)
        if sum_u is None:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        sum_u[:, i * keep:(i + 1) * keep] = u[:, :keep]
        sum_s[i * keep:(i + 1) * keep] = s[:keep]
        sum_v[i * keep:(i + 1) * keep, :] = v[:keep, :]
    return _polar(sum_u) @ torch.diag(sum_s) @ _polar(sum_v)


def iso_c(vectors: list[Tensor]) -> Tensor:
    total = sum(v.double() for v in vectors)
    u, s, v = torch.linalg.svd(total, full_matrices=False)
    return u @ torch.diag(torch.ones_like(s) * s.mean()) @ v


def iso_cts(vectors: list[Tensor], common_fraction: float = 0.8) -> Tensor:
    tvs = [v.double() for v in vectors]
    r, t = min(tvs[0].shape), len(tvs)
    common = int(r * common_fraction)
    common = r - round((r - common) / t) * t
    u, s, v = torch.linalg.svd(sum(tvs), full_matrices=False)
    uc, sc, vc = u[:, :common], s[:common], v[:common, :]
    per_task = int((r - common) / t)
    comb_u = comb_s = comb_v = None
    for i, w in enumerate(tvs):
        u_ts, s_ts, v_ts = torch.linalg.svd(w - uc @ uc.T @ w, full_matrices=False)
        if comb_u is None:
            comb_u, comb_s, comb_v = torch.zeros_like(u_ts), torch.zeros_like(s_ts), torch.zeros_like(v_ts)
        comb_u[:, i * per_task:(i + 1) * per_task] = u_ts[:, :per_task]
        comb_s[i * per_task:(i + 1) * per_task] = s_ts[:per_task]
        comb_v[i * per_task:(i + 1) * per_task, :] = v_ts[:per_task, :]
    comb_u[:, t * per_task:t * per_task + common] = uc
    comb_s[t * per_task:t * per_task + common] = sc
    comb_v[t * per_task:t * per_task + common, :] = vc
    flat = torch.ones_like(comb_s) * comb_s.mean()
    return _polar(comb_u) @ torch.diag(flat) @ _polar(comb_v)
