"""TIES-Merging as the authors' code computes it.

Follows prateeky2806/ties-merging, ``src/ties_minimal.ipynb`` (``topk_values_mask``,
``resolve_sign``/``resolve_zero_signs``, ``disjoint_merge``), applied to one tensor: the N inputs
flattened into the rows of M.
"""
from __future__ import annotations

import torch
from torch import Tensor


def topk_values_mask(m: Tensor, density: float) -> Tensor:
    """Keep every entry ≥ the (d − int(d·density))-th smallest magnitude of its row."""
    if density >= 1:
        return m
    d = m.shape[1]
    k = d - int(d * density)
    kth, _ = m.abs().kthvalue(k, dim=1, keepdim=True)
    return m * (m.abs() >= kth)


def resolve_sign(m: Tensor) -> Tensor:
    """sign(Σ rows); a zero sum takes the majority sign (the sign of the sum of those signs)."""
    sign = torch.sign(m.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    return sign


def disjoint_mean(m: Tensor, sign: Tensor) -> Tensor:
    keep = torch.where(sign.unsqueeze(0) > 0, m > 0, m < 0)
    selected = m * keep
    return selected.sum(dim=0) / torch.clamp((selected != 0).sum(dim=0).float(), min=1)


def ties(vectors: list[Tensor], density: float, lam: float = 1.0) -> Tensor:
    m = torch.stack([v.reshape(-1).float() for v in vectors])
    trimmed = topk_values_mask(m, density)
    return (lam * disjoint_mean(trimmed, resolve_sign(trimmed))).reshape(vectors[0].shape)


def dare_ties(vectors: list[Tensor], keeps: list[Tensor], keep_prob: float, lam: float = 1.0) -> Tensor:
    """DARE's drop-and-rescale with the given keep masks, then TIES' election and disjoint mean
    (yule-BUAA/MergeLM, ``model_merging_methods/merging_methods.py``: ``ties_merging`` on the
    rescaled deltas at density 1, whose sign election is TIES' with the majority sign on a zero sum)."""
    m = torch.stack([torch.where(k.reshape(-1), v.reshape(-1).float() / keep_prob, 0.0) for v, k in zip(vectors, keeps)])
    return (lam * disjoint_mean(m, resolve_sign(m))).reshape(vectors[0].shape)
