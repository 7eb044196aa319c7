"""Spectral merges of 2-D task-vector tensors (SVD per weight matrix).

* ``tsv`` — TSV-M, Gargiulo et al., "Task Singular Vectors", arXiv 2412.00081: per task keep the top
  ⌊r/T⌋ singular triplets (r = min(m, n)), concatenate them, replace the stacked U and V by their
  nearest orthogonal matrices (polar factor, from an SVD), recombine, scale by α = 1.
* ``iso_c`` — Marczak et al., "No Task Left Behind: Isotropic Model Merging", arXiv 2502.04959:
  the sum Σ τ_t with its spectrum flattened to the mean singular value, scaled by α = 1.
* ``iso_cts`` — same paper: the top singular directions of Σ τ_t (a common space of fraction 0.8 of
  r, adjusted so the rest divides evenly among the T tasks) plus, per task, the top directions of
  τ_t with the common space projected out; the stacked bases are orthogonalized (polar factor) and
  the spectrum flattened to the mean; scaled by α = 1.

Only 2-D weights are decomposed, but CLIP's ``text_projection``; the executor averages every other
tensor (biases, norms, embeddings of other ranks, convolution kernels) and scales that mean by α
with the rest of the merged vector, as the reference code does (danielm1405/iso-merging,
``src/utils/iso.py`` and ``src/utils/TSVM_utils.py``: the merged vector is applied at scaling
coefficient α); merges recorded before (no ``vectors`` in the op) replay with the mean unscaled and
every 2-D tensor decomposed. The papers tune α on
validation data (``--alpha auto --probe`` sweeps it); defaults follow the reference code
(fusion_bench, danielm1405/iso-merging). Decompositions run in fp32 (fp64 inputs stay fp64).

Iso-C/Iso-CTS flatten *every* singular value, as defined; they are meant for full-rank task vectors.
On a low-rank sum (LoRA adapters: rank ≤ T·r) the flattening spreads the energy over directions that
complete the null space arbitrarily, and the merged update stays near zero in the tasks' directions
(docs/benchmarks.md, MiniLM).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ...errors import BadInput
from .primitives import running_sum, svd
from .registry import implements


def _matrices(vectors: Sequence[Tensor], method: str) -> list[Tensor]:
    if not vectors:
        raise BadInput("a merge needs at least one input")
    if vectors[0].dim() != 2:
        raise BadInput(f"{method} merges 2-D weight matrices, got shape {list(vectors[0].shape)}")
    dtype = torch.float64 if vectors[0].dtype == torch.float64 else torch.float32
    return [v.to(dtype) for v in vectors]


def polar(x: Tensor) -> Tensor:
    """The nearest matrix with orthonormal columns (rows, if wider): U Vᵀ of x's SVD."""
    u, _s, vh = svd(x)
    return u @ vh


def _flat(u: Tensor, s: Tensor, vh: Tensor) -> Tensor:
    return (u * s.mean()) @ vh


def top_triplets(mats: Iterable[Tensor], k: int, batched: bool) -> tuple[list[Tensor], ...]:
    """The top-k singular triplets (U columns, values, Vᵀ rows) of each matrix, as copies (a view
    would keep every full U alive). ``batched`` (callers pass it on CUDA) decomposes all matrices in
    one batched call, which a GPU runs concurrently; otherwise ``mats`` is consumed one at a time, so
    a generator holds one matrix and one SVD workspace at once."""
    if batched:
        u, s, vh = svd(torch.stack(list(mats)))
        return list(u[:, :, :k].clone().unbind(0)), list(s[:, :k].clone().unbind(0)), list(vh[:, :k].clone().unbind(0))
    us, ss, vhs = [], [], []
    for m in mats:
        u, s, vh = svd(m)
        us.append(u[:, :k].clone())
        ss.append(s[:k].clone())
        vhs.append(vh[:k].clone())
        del u, s, vh
    return us, ss, vhs


@implements("tsv")
def tsv(vectors: Sequence[Tensor], *, alpha: float) -> Tensor:
    mats = _matrices(vectors, "tsv")
    k = max(1, min(mats[0].shape) // len(mats))
    us, ss, vhs = top_triplets(mats, k, batched=mats[0].is_cuda)
    u, s, vh = torch.cat(us, 1), torch.cat(ss), torch.cat(vhs, 0)
    del us, vhs
    return alpha * (polar(u) * s) @ polar(vh)


@implements("iso_c")
def iso_c(vectors: Sequence[Tensor], *, alpha: float) -> Tensor:
    mats = _matrices(vectors, "iso_c")
    total = running_sum(mats, mats[0].dtype)  # stacking first would copy all N
    return alpha * _flat(*svd(total))


@implements("iso_cts")
def iso_cts(vectors: Sequence[Tensor], *, common: float, alpha: float) -> Tensor:
    mats = _matrices(vectors, "iso_cts")
    t, r = len(mats), min(mats[0].shape)
    k = int(r * common)
    per_task = round((r - k) / t)
    k = r - per_task * t
    u, s, vh = svd(running_sum(mats, mats[0].dtype))
    us, ss, vhs = [], [], []
    if per_task > 0:
        uc = u[:, :k]
        residuals = (m - uc @ (uc.T @ m) for m in mats)  # the common space projected out, one at a time
        us, ss, vhs = top_triplets(residuals, per_task, batched=mats[0].is_cuda)
    us.append(u[:, :k])
    ss.append(s[:k])
    vhs.append(vh[:k])
    uu, sv, vv = torch.cat(us, 1), torch.cat(ss), torch.cat(vhs, 0)
    return alpha * (polar(uu) * sv.mean()) @ polar(vv)
