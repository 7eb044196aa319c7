"""RegMean and Chain of Merges: a linear layer merged as the least-squares fit of every input's
outputs on activations.

RegMean (Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", arXiv
2212.09849): for a linear layer y = W x, the merged W minimizes Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖², X_i the
layer's inputs on input i's data, whose closed form is

    Wᵀ = (Σ_i G̃_i)⁻¹ Σ_i G̃_i W_iᵀ,   G_i = X_iᵀ X_i / n_i,

with the Gram matrices' off-diagonal entries scaled by ``ratio`` (G̃ = ratio·G + (1 − ratio)·diag G:
the authors' ``reduce_non_diagonal_ratio``, which keeps the sum invertible and pulls the merge toward
a per-feature weighted mean at 0). Every other tensor (biases, norms, embeddings) is averaged. As
fusion_bench implements it (tanganke/fusion_bench, fusion_bench/method/regmean/regmean.py @
01d4fc63: ``merging_with_regmean_weights``), each G_i normalized by its row count.

Chain of Merges (Buzzega, Salami, Porrello, Calderara, arXiv 2508.21421): the same per-layer
solution, but the layers are merged in the order the model runs them and each layer's G_i is
measured on the *partially merged* model (every layer before it already merged), so later layers
are fitted on the statistics the merged earlier ones produce instead of each input's own — the
"merging covariate shift" the paper names. The chain is the operation's (``ops.merge.activation``);
this module is the per-layer solution both share (registered as ``regmean`` and ``com``).

Defaults: ``ratio`` = 0.6, fusion_bench's value for CLIP ViTs (config/method/regmean/
clip_regmean.yaml @ 371c80cb); the probe set is the data (fusion_bench reads 256 examples per
task: pass a probe of that size). What CoM's paper fixes beyond this could not be read here (see
docs/benchmarks.md): dithub chains at the granularity of single linear layers.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .registry import implements


def reduce_off_diagonal(gram: torch.Tensor, ratio: float) -> torch.Tensor:
    """``gram`` with its off-diagonal entries multiplied by ``ratio`` (the diagonal kept)."""
    out = gram * ratio
    out.diagonal().copy_(gram.diagonal())
    return out


def regmean_solve(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], ratio: float) -> torch.Tensor:
    """The merged weight (out, in) of one linear layer from (W_i (out, in), G_i (in, in)) per input,
    solved in float64 (torch.linalg.LinAlgError where Σ G̃_i is singular: an input feature the
    probes never reach, with ratio < 1 or without)."""
    total = None
    rhs = None
    for weight, gram in layers:
        g = reduce_off_diagonal(gram.double(), ratio)
        total = g if total is None else total + g
        term = g @ weight.double().T
        rhs = term if rhs is None else rhs + term
    assert total is not None and rhs is not None
    return torch.linalg.solve(total, rhs).T.to(layers[0][0].dtype)


@implements("regmean")
def regmean(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], *, ratio: float) -> torch.Tensor:
    """RegMean's merged weight for one layer from each input's (weight, Gram of its own inputs)."""
    return regmean_solve(layers, ratio)


@implements("com")
def com(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], *, ratio: float) -> torch.Tensor:
    """CoM's merged weight for one layer from each input's (weight, Gram of the layer's inputs in the
    partially merged model on that input's probe)."""
    return regmean_solve(layers, ratio)
