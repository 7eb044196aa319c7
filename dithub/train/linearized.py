"""Linearized fine-tuning: train θ − θ0 on the first-order model f(x; θ0) + J(θ0)(θ − θ0).

Ortiz-Jimenez et al., "Task Arithmetic in the Tangent Space", arXiv 2305.12827: task vectors
trained on the linearized model add and subtract as the linear model does, so removing one client's
vector removes its influence on the (linearized) outputs exactly to first order, which
``revert --method ntk`` relies on (arXiv 2510.13606). The forward is one ``torch.func.jvp`` through
the base model; only the chosen parameters move. ``save_linearized`` writes the task vector with
the metadata that marks it (``dithub.linearized = true``); commit it like any task vector.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..algorithms.revert.negation import LINEARIZED


class LinearizedModel(torch.nn.Module):
    """f_lin(x; θ0 + δ) = f(x; θ0) + J(θ0)·δ for the parameters named in ``names``."""

    def __init__(self, model: torch.nn.Module, names: Iterable[str]) -> None:
        super().__init__()
        self.model = model.eval()
        self.names = list(names)
        params = dict(model.named_parameters())
        self.theta0 = {n: params[n].detach().clone() for n in self.names}
        self.delta = torch.nn.ParameterDict({n.replace(".", "/"): torch.nn.Parameter(torch.zeros_like(params[n])) for n in self.names})
        for p in model.parameters():
            p.requires_grad_(False)

    def deltas(self) -> dict[str, Tensor]:
        return {n: self.delta[n.replace(".", "/")] for n in self.names}

    def forward(self, output: Callable[[Any], Tensor] = lambda out: out.logits, **inputs: Any) -> Tensor:
        def f(*theta: Tensor) -> Tensor:
            return output(torch.func.functional_call(self.model, dict(zip(self.names, theta)), kwargs=inputs))

        deltas = self.deltas()
        # the math attention kernel: fused CPU/GPU attention kernels have no forward-mode derivative
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            value, tangent = torch.func.jvp(f, tuple(self.theta0[n] for n in self.names), tuple(deltas[n] for n in self.names))[:2]
        return value + tangent


def train_linearized(model: torch.nn.Module, names: Iterable[str], batches: Callable[[], Iterable[tuple[dict, Tensor]]], *,
                     epochs: int = 5, lr: float = 1e-3, seed: int = 0,
                     loss: Callable[[Tensor, Tensor], Tensor] = torch.nn.functional.cross_entropy) -> dict[str, Tensor]:
    """Fit δ for parameters ``names`` on the linearized model; return δ by parameter name
    (``batches()`` yields (model keyword inputs, targets) each epoch)."""
    torch.manual_seed(seed)
    lin = LinearizedModel(model, names)
    opt = torch.optim.AdamW(lin.delta.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(epochs):
        for inputs, target in batches():
            value = loss(lin(**inputs), target)
            opt.zero_grad()
            value.backward()
            opt.step()
    return {n: d.detach().clone() for n, d in lin.deltas().items()}


def save_linearized(tau: Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a linearized task vector (keyed by checkpoint names) with the metadata that marks it."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tau.items()}, str(path), metadata={LINEARIZED: "true"})
    return Path(path)
