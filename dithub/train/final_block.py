"""Fitting a model's final block to target latents (the weight mapping of Class Vectors, arXiv
2510.11268): only the last transformer layer and the modules that run between it and the head
move; the loss is the mean squared error between the latents the head receives and the targets."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import BadInput


def final_block(model: torch.nn.Module, head: str, example: Tensor) -> list[str]:
    """The names of the parameters of the model's final block: the last element of its longest
    ``nn.ModuleList`` (the stack of layers), and every module with parameters that runs after it
    and before ``head`` (a final norm), found by running ``example`` once."""
    stacks = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not stacks:
        raise BadInput("the model has no stack of layers whose last one could be fitted")
    stack, layers = max(stacks, key=lambda s: len(s[1]))
    last = f"{stack}.{len(layers) - 1}" if stack else str(len(layers) - 1)
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _a, _o, n=n: order.append(n))
             for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    key_in = getattr(model, "main_input_name", "input_ids")
    try:
        with torch.no_grad():
            model(**{key_in: example[:1]})
    finally:
        for h in hooks:
            h.remove()
    inside = [i for i, n in enumerate(order) if n == last or n.startswith(last + ".")]
    after = {n for n in order[inside[-1] + 1 : order.index(head)]} if inside and head in order else set()
    return [n for n, _ in model.named_parameters()
            if n.startswith(last + ".") or n.rpartition(".")[0] in after]


def fit_final_block(model: torch.nn.Module, head: str, params: list[str], inputs: Tensor, targets: Tensor, *,
                    steps: int, lr: float, seed: int) -> float:
    """Move ``params`` (in place) so that the latents ``head`` receives on ``inputs`` approach
    ``targets``: ``steps`` full-batch Adam steps at ``lr``, seeded; returns the final loss. The model
    stays in eval mode (no dropout: the fit is deterministic and replayable)."""
    named = dict(model.named_parameters())
    was = {n: p.requires_grad for n, p in named.items()}
    for n, p in named.items():
        p.requires_grad_(n in params)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam([named[n] for n in params], lr=lr)
    seen: list[Tensor] = []
    hook = model.get_submodule(head).register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    key_in = getattr(model, "main_input_name", "input_ids")
    model.eval()
    loss = torch.zeros(())
    try:
        for _ in range(steps):
            seen.clear()
            model(**{key_in: inputs})
            loss = torch.nn.functional.mse_loss(seen[0], targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        hook.remove()
        for n, p in named.items():
            p.requires_grad_(was[n])
    return float(loss.detach())
