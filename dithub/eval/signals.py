"""What rebase and merge methods measure on a model with a probe: gradient signs, layer activations,
the order linear layers run in and the Gram matrices of their inputs."""
from __future__ import annotations

from collections.abc import Mapping
from itertools import islice

import torch
from torch import Tensor

from ..errors import BadInput
from .probe import Probe


def _samples(probe: Probe, limit: int) -> list[tuple[Tensor, Tensor]]:
    """The probe's first ``limit`` samples, one (input, label) pair each."""
    return list(islice(((x, y) for inputs, labels in probe.batches for x, y in zip(inputs, labels)), limit))


def majority_descent_signs(model: torch.nn.Module, probe: Probe, params: Mapping[str, str], samples: int) -> dict[str, Tensor]:
    """Per key: sign(Σ_i sign(−∇L_i)) over the first ``samples`` probe samples, one backward each
    (``params`` maps each key to the model's parameter name; L is cross-entropy of the logits)."""
    named = dict(model.named_parameters())
    tensors = [named[p] for p in params.values()]
    votes = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]
    key_in = getattr(model, "main_input_name", "input_ids")
    model.eval()
    for x, y in _samples(probe, samples):
        logits = model(**{key_in: x.unsqueeze(0)}).logits
        loss = torch.nn.functional.cross_entropy(logits, y.reshape(1).long())
        for vote, g in zip(votes, torch.autograd.grad(loss, tensors)):
            vote -= torch.sign(g.detach()).float()
    return {key: torch.sign(v) for key, v in zip(params, votes)}


@torch.no_grad()
def linear_activations(model: torch.nn.Module, probe: Probe, modules: Mapping[str, str], samples: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Per key: (inputs, outputs) of the linear module named ``modules[key]`` on the first
    ``samples`` probe inputs, every token one row: (n, d_in), (n, d_out). Keys whose module is not
    an ``nn.Linear`` are left out."""
    seen: dict[str, list[list[Tensor]]] = {k: [[], []] for k in modules}
    hooks = []
    for key, name in modules.items():
        module = model.get_submodule(name)
        if not isinstance(module, torch.nn.Linear):
            del seen[key]
            continue

        def hook(_m: torch.nn.Module, args: tuple, out: Tensor, key: str = key) -> None:
            seen[key][0].append(args[0].reshape(-1, args[0].shape[-1]).float())
            seen[key][1].append(out.reshape(-1, out.shape[-1]).float())
        hooks.append(module.register_forward_hook(hook))
    key_in = getattr(model, "main_input_name", "input_ids")
    model.eval()
    try:
        rows = _samples(probe, samples)
        for i in range(0, len(rows), 64):
            model(**{key_in: torch.stack([x for x, _ in rows[i : i + 64]])})
    finally:
        for h in hooks:
            h.remove()
    return {k: (torch.cat(ins), torch.cat(outs)) for k, (ins, outs) in seen.items()}


class _Seen(Exception):
    """Raised by a hook to end a forward pass once every wanted input was seen."""


@torch.no_grad()
def linear_order(model: torch.nn.Module, probe: Probe) -> list[str]:
    """The names of the model's ``nn.Linear`` modules in the order they first run on the probe's
    first input."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _a, _o, name=name: order.append(name) if name not in order else None)
             for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    model.eval()
    try:
        _forward(model, probe, probe.batches[0][0][:1])
    finally:
        for h in hooks:
            h.remove()
    return order


@torch.no_grad()
def input_grams(model: torch.nn.Module, probe: Probe, modules: list[str], *, stop: bool = False) -> dict[str, Tensor]:
    """Per linear module named in ``modules``: XᵀX / n of its inputs X on the whole probe (every
    token one row, float64). ``stop``: end each forward pass once every module has run (the rest of
    the model cannot change them), as a chained merge measures one layer at a time."""
    sums = {name: torch.zeros(0, dtype=torch.float64) for name in modules}
    rows = dict.fromkeys(modules, 0)
    pending: set[str] = set()

    def hook(_m: torch.nn.Module, args: tuple, name: str) -> None:
        x = args[0].reshape(-1, args[0].shape[-1]).double()
        sums[name] = x.T @ x if rows[name] == 0 else sums[name] + x.T @ x
        rows[name] += x.shape[0]
        pending.discard(name)
        if stop and not pending:
            raise _Seen

    hooks = [model.get_submodule(name).register_forward_pre_hook(lambda m, a, name=name: hook(m, a, name)) for name in modules]
    model.eval()
    try:
        for inputs, _labels in probe.batches:
            pending.update(modules)
            try:
                _forward(model, probe, inputs)
            except _Seen:
                pass
    finally:
        for h in hooks:
            h.remove()
    silent = [name for name in modules if rows[name] == 0]
    if silent:
        raise BadInput(f"linear module {silent[0]!r} never ran on probe {probe.source}", "give a probe of the model's main input")
    return {name: sums[name] / rows[name] for name in modules}


def _forward(model: torch.nn.Module, probe: Probe, inputs: Tensor) -> None:
    """The model on a batch of probe inputs given as its main input; BadInput where they do not fit
    it (a hook's ``_Seen`` passes through)."""
    key_in = getattr(model, "main_input_name", "input_ids")
    try:
        model(**{key_in: inputs})
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise BadInput(f"probe {probe.source}: its inputs {tuple(inputs.shape)} ({inputs.dtype}) do not fit the model's "
                       f"{key_in}: {str(exc).splitlines()[0][:200]}", f"give the model's {key_in}, as its probe sets hold") from None
