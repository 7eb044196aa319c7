"""Theseus: transport an update across bases by orthogonal Procrustes, per linear layer.

After "Theseus" (arXiv 2602.12952): each linear layer of the old base and of the new one sees the
same unlabelled probe inputs; an orthogonal (semi-orthogonal when widths differ) map between the
two bases' activations is fitted on each side of the layer by orthogonal Procrustes,
T = U Vᵀ from the SVD of X_oldᵀ X_new (Schönemann 1966), and the update moves as
ΔW_new = T_outᵀ ΔW T_in, so that ΔW_new x_new ≈ T_outᵀ ΔW x_old. A LoRA pair stays a pair
(B' = T_outᵀ B, A' = A T_in); a bias update moves by T_outᵀ. Works when widths differ (T is then
rectangular); recovers the update exactly when the new base is an orthogonal transform of the
old one on the layer's input and output spaces. Where the probe's activations span fewer
directions than the layer has, the unseen directions are kept as they are (a 1e-9 ridge toward
the identity; without it the SVD would turn them arbitrarily). Defaults: the executor feeds the first
``samples`` = 256 probe inputs (every token of each is one row). ``data=weights`` is the
data-free variant: the same alternating fit on the layer's weights alone (needs no probe).
Tensors that are not the weight or bias of a linear layer move unchanged (and must keep their shape).

Activations alone fix a map only on the directions the probe reaches (LayerNorm outputs, for one,
never leave the hyperplane orthogonal to the ones vector), so each layer's maps are fitted jointly
with the weights' own consistency, T_outᵀ W_old T_in ≈ W_new, by alternating Procrustes
(``rounds`` = 10), and a 1e-9 ridge toward the identity settles whatever both leave open.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import IncompatibleAdapters
from ..params import Range
from .registry import RebaseContext, Transport, as_float, register_rebase


RIDGE = 1e-9


def procrustes(source: Tensor, target: Tensor, ridge: float = RIDGE) -> Tensor:
    """The (semi-)orthogonal T (d_source x d_target) minimizing ‖source @ T − target‖_F.

    Directions the samples never reach are left alone: a ridge of ``ridge``·‖sourceᵀ target‖
    toward the identity (``[I 0]`` across widths) settles what the data leaves undetermined.
    """
    m = source.double().T @ target.double()
    m += ridge * torch.linalg.matrix_norm(m, ord=2) * torch.eye(*m.shape, dtype=m.dtype)
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return (u @ vh).float()


class Rotation(Transport):
    def __init__(self, maps: dict[str, tuple[Tensor, Tensor]]) -> None:
        self.maps = maps  # module -> (T_in, T_out)

    def dense(self, key: str, delta: Tensor) -> Tensor:
        module, _, leaf = key.rpartition(".")
        if module not in self.maps:
            return delta
        t_in, t_out = self.maps[module]
        if leaf == "bias":
            return t_out.T @ as_float(delta)
        return t_out.T @ as_float(delta) @ t_in

    def factors(self, key: str, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        module = key.rpartition(".")[0]
        if module not in self.maps:
            return a, b
        t_in, t_out = self.maps[module]
        return as_float(a) @ t_in, t_out.T @ as_float(b)


def layer_maps(w_old: Tensor, w_new: Tensor, activations: tuple[Tensor, Tensor, Tensor, Tensor] | None,
               rounds: int) -> tuple[Tensor, Tensor]:
    """(T_in, T_out) of one linear layer: alternating Procrustes fits of the activations (when
    given) together with the weights' own consistency, T_outᵀ W_old T_in ≈ W_new; each block is
    scaled by its norm on both sides, so an exact relation stays exact. Without activations the
    fit starts once from each side (the input map first, then the output map first) and keeps the
    better, as one layer's weights cannot say which side of it changed."""
    sw = w_old.norm().clamp_min(1e-12)
    x_blocks: list[tuple[Tensor, Tensor]] = []
    y_blocks: list[tuple[Tensor, Tensor]] = []
    if activations is not None:
        x_old, x_new, y_old, y_new = activations
        sx, sy = x_old.norm().clamp_min(1e-12), y_old.norm().clamp_min(1e-12)
        x_blocks, y_blocks = [(x_old / sx, x_new / sx)], [(y_old / sy, y_new / sy)]

    def fit_in(t_out: Tensor) -> Tensor:
        pairs = [*x_blocks, (w_old / sw, t_out @ w_new / sw)]
        return procrustes(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))

    def fit_out(t_in: Tensor) -> Tensor:
        pairs = [*y_blocks, ((w_old @ t_in).T / sw, w_new.T / sw)]
        return procrustes(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))

    def run(t_in: Tensor, t_out: Tensor, out_first: bool) -> tuple[Tensor, Tensor]:
        for _ in range(rounds):
            if out_first:
                t_out = fit_out(t_in)
            t_in = fit_in(t_out)
            if not out_first:
                t_out = fit_out(t_in)
        return t_in, t_out

    eye_in, eye_out = torch.eye(w_old.shape[1], w_new.shape[1]), torch.eye(w_old.shape[0], w_new.shape[0])
    if activations is not None:
        return run(procrustes(x_old, x_new), procrustes(y_old, y_new), out_first=False)
    fits = [run(eye_in, eye_out, out_first=first) for first in (True, False)]
    return min(fits, key=lambda f: float((f[1].T @ w_old @ f[0] - w_new).norm()))


@register_rebase("theseus", paper="2602.12952", defaults={"samples": 256, "data": "activations", "rounds": 10},
                 needs="inputs", equal_widths=False, choices={"data": ("activations", "weights")},
                 ranges={"samples": Range(1, None), "rounds": Range(1, None)})
def theseus(ctx: RebaseContext, *, samples: int, data: str, rounds: int) -> Transport:
    """Per linear layer, Procrustes maps between the bases (from activations and weights, or weights)."""
    maps: dict[str, tuple[Tensor, Tensor]] = {}
    for key in sorted({k for k in ctx.keys if k.endswith(".weight") and ctx.old[k].dim() == 2}):
        acts = None
        if data == "activations":
            if ctx.activations is None or key not in ctx.activations:
                raise IncompatibleAdapters(f"no activations were recorded for {key!r}", "is it a linear layer of the model?")
            acts = ctx.activations[key]
        maps[key.rpartition(".")[0]] = layer_maps(ctx.old[key], ctx.new[key], acts, rounds)
    return Rotation(maps)
