"""Theseus: transport an update across bases by orthogonal Procrustes, per linear layer.

After "Theseus" (arXiv 2602.12952), as the authors' code does it (apanariello4/merge-and-rebase,
``src/merge_and_rebase/rebase/methods/theseus.py``, activation covariance mode, its defaults: no
centering, no whitening): each linear layer of the old base and of the new one sees the same
unlabelled probe inputs; the input map T_in is the orthogonal Procrustes map between the two bases'
inputs to the layer, T = U Vᵀ from the SVD of X_oldᵀ X_new (Schönemann 1966), the output map T_out
the same between its outputs, each fitted on its own; the update moves as ΔW_new = T_outᵀ ΔW T_in
(a LoRA pair stays a pair, B' = T_outᵀ B, A' = A T_in; a bias update moves by T_outᵀ). Works when
widths differ (T is then semi-orthogonal). Defaults: the executor feeds the first ``samples`` = 256
probe inputs (every token of each is one row). Tensors that are not the weight or bias of a linear
layer move unchanged (and must keep their shape).

The probe fixes each map only on the directions its activations span. On the input side that is
harmless: new inputs outside them do not occur on the probe's distribution. On the output side it is
not: a layer's outputs span at most its input width (plus one, with a bias), so the output map of a
layer wider out than in (an MLP's first layer) is arbitrary on the rest, and so is any update
written there. Such an update is refused (``IncompatibleAdapters``) when more than
``UNDETERMINED`` of its norm, on the inputs the probe reaches, lies outside the determined output
directions; the authors' code would move it anyway. Directions left open take a 1e-9 ridge toward
the identity, so the completion is deterministic.

``data='weights'`` (the authors' data-free mode: maps that align the singular vectors of W_old and
W_new) is refused: a layer's weights fix its maps only up to a sign per singular direction
(P U E Uᵀ and Q V E Vᵀ give the same P W Qᵀ for every diagonal sign matrix E), and those signs
change the transported update. ``fit='joint'`` is the first release's fit (maps fitted with the
weights' own consistency T_outᵀ W_old T_in ≈ W_new by alternating Procrustes, ``rounds`` = 10;
``data='weights'`` then uses the weights alone), what rebases recorded before the parameter replay
with; it refuses nothing.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...errors import BadInput, IncompatibleAdapters
from ..params import Range
from .registry import RebaseContext, Transport, as_float, register_rebase


RIDGE = 1e-9
UNDETERMINED = 1e-3
"""The largest fraction of an update's norm (on the inputs the probe reaches) that may lie in output
directions the probe leaves undetermined."""
SEEN = 1e-10
"""Singular values of a cross-covariance under this fraction of the largest count as unseen
directions: a direction of relative gain 1e-5 (its value squared) is still well above the fp32
rounding of the activations (~1e-7 of each row), which is all that perturbs a planted relation."""


def procrustes(source: Tensor, target: Tensor, ridge: float = RIDGE) -> Tensor:
    """The (semi-)orthogonal T (d_source x d_target) minimizing ‖source @ T − target‖_F. Directions
    the samples never reach are left alone: a ridge of ``ridge``·‖sourceᵀ target‖ toward the
    identity (``[I 0]`` across widths) settles what the data leaves undetermined."""
    m = source.double().T @ target.double()
    m += ridge * torch.linalg.matrix_norm(m, ord=2) * torch.eye(*m.shape, dtype=m.dtype)
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return (u @ vh).float()


def seen_directions(source: Tensor, target: Tensor) -> Tensor:
    """An orthonormal basis (d_source x k) of the source-side directions the samples determine a
    Procrustes map on: the left singular vectors of sourceᵀ target above ``SEEN``."""
    u, s, _ = torch.linalg.svd(source.double().T @ target.double(), full_matrices=False)
    return u[:, : int((s > SEEN * s[0]).sum()) if len(s) and s[0] > 0 else 0].float()


class Rotation(Transport):
    def __init__(self, maps: dict[str, tuple[Tensor, Tensor]],
                 seen: dict[str, tuple[Tensor, Tensor]] | None = None) -> None:
        self.maps = maps  # module -> (T_in, T_out)
        self.seen = seen or {}  # module -> (input, output directions the probe determines), for the check

    def dense(self, key: str, delta: Tensor) -> Tensor:
        module, _, leaf = key.rpartition(".")
        if module not in self.maps:
            return delta
        t_in, t_out = self.maps[module]
        if leaf == "bias":
            self._check(key, as_float(delta)[:, None], None)
            return t_out.T @ as_float(delta)
        self._check(key, as_float(delta), None)
        return t_out.T @ as_float(delta) @ t_in

    def factors(self, key: str, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        module = key.rpartition(".")[0]
        if module not in self.maps:
            return a, b
        t_in, t_out = self.maps[module]
        self._check(key, as_float(b), as_float(a))
        return as_float(a) @ t_in, t_out.T @ as_float(b)

    def _check(self, key: str, left: Tensor, right: Tensor | None) -> None:
        """Refuse the update left @ right (left alone: a dense ΔW or a bias column) where more than
        ``UNDETERMINED`` of it, on the seen inputs, lies in output directions the probe leaves open."""
        module = key.rpartition(".")[0]
        if module not in self.seen:
            return
        seen_in, seen_out = self.seen[module]
        if right is None:  # a dense ΔW on the seen inputs, or a bias column
            on_inputs = left @ seen_in if key.endswith(".weight") else left
        else:  # a LoRA pair: B (A on the seen inputs)
            on_inputs = left @ (right @ seen_in)
        total = float(on_inputs.norm())
        outside = float((on_inputs - seen_out @ (seen_out.T @ on_inputs)).norm())
        if total > 0 and outside > UNDETERMINED * total:
            raise IncompatibleAdapters(
                f"theseus: {key!r}: the probe fixes the output map on {seen_out.shape[1]} of its {seen_out.shape[0]} "
                f"directions and {outside / total:.0%} of the update lies outside them, where the map is arbitrary",
                "a layer's outputs span at most its input width (an MLP's first layer is wider out than in); rebase "
                "with another method, or -p fit=joint (the first release's fit, which keeps unseen directions unchanged)")


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


@register_rebase("theseus", paper="2602.12952",
                 defaults={"samples": 256, "data": "activations", "rounds": 10, "fit": "paper"},
                 needs="inputs", equal_widths=False, choices={"data": ("activations", "weights"), "fit": ("paper", "joint")},
                 ranges={"samples": Range(1, None), "rounds": Range(1, None)}, legacy={"fit": "joint"})
def theseus(ctx: RebaseContext, *, samples: int, data: str, rounds: int, fit: str) -> Transport:
    """Per linear layer, Procrustes maps between the bases: each side from the probe's activations
    (``fit='paper'``), or the first release's joint fit with the weights (``fit='joint'``)."""
    if fit == "paper" and data == "weights":
        raise BadInput("theseus -p data=weights cannot be made reliable: a layer's weights fix its maps only up to a "
                       "sign per singular direction, and those signs change the transported update",
                       "give a probe (--probe FILE with inputs: data=activations), or -p fit=joint for the first release's fit")
    maps: dict[str, tuple[Tensor, Tensor]] = {}
    seen: dict[str, tuple[Tensor, Tensor]] = {}
    for key in sorted({k for k in ctx.keys if k.endswith(".weight") and ctx.old[k].dim() == 2}):
        acts = None
        if data == "activations":
            if ctx.activations is None or key not in ctx.activations:
                raise IncompatibleAdapters(f"no activations were recorded for {key!r}", "is it a linear layer of the model?")
            acts = ctx.activations[key]
        module = key.rpartition(".")[0]
        if fit == "joint":
            maps[module] = layer_maps(ctx.old[key], ctx.new[key], acts, rounds)
            continue
        assert acts is not None
        x_old, x_new, y_old, y_new = acts
        maps[module] = (procrustes(x_old, x_new), procrustes(y_old, y_new))
        seen[module] = (seen_directions(x_old, x_new), seen_directions(y_old, y_new))
    return Rotation(maps, seen)
