"""Activation merges (RegMean, CoM): the base model run with the inputs' weights on probe sets,
each linear layer solved from the Gram matrices of its inputs (``algorithms.merge.regression``),
every other tensor the inputs change averaged.

RegMean measures layer l's Gram matrix for input i on model i (base + τ_i) and probe i; CoM merges
the layers in the order they run and measures each on the partially merged model (the layers
before it merged, the averaged tensors in place) and probe i. The probes are stored in the
repository as ``probe`` trees the merge commit names (``Op.data``): one shared by every input, or
one per input in order; a replay or an exact revert reads them from there.
"""
from __future__ import annotations

from typing import Any

import torch

from ...algorithms.merge import MergeMethod, get_method
from ...errors import BadInput, IncompatibleAdapters
from ...eval import input_grams, linear_order, load_base_model
from ...formats import base_key_lookup
from ...formats.hf_names import names_of
from ...formats.torch_io import TORCH_DTYPES
from ...progress import ProgressFactory, no_progress
from ...store import ObjectId, TensorEntry, Tree
from ...store.view import RepoView
from ..deltas import delta_loader, put_tensor
from ..probes import read_probe
from .plan import MergePlan


def run_activation(repo: RepoView, plan: MergePlan, progress: ProgressFactory = no_progress) -> ObjectId:
    """Run the planned activation merge on the CPU and store its tree (a task vector on the base)."""
    method = get_method(plan.method)
    assert plan.base is not None  # plan_merge refuses inputs without one
    base = repo.store.read_tree(plan.base)
    model = load_base_model(repo, base).float()
    params = dict(model.named_parameters())
    to_model, lookup = names_of(base), base_key_lookup(base)
    trees = [repo.store.read_tree(repo.store.read_commit(i).tree) for i in plan.inputs]
    loaders = [delta_loader(repo, t, plan.base) for t in trees]
    sources = plan.sources or [{} for _ in trees]
    names: dict[str, str] = {}  # planned tensor -> model parameter
    deltas: list[dict[str, torch.Tensor]] = [{} for _ in trees]
    for name, (_dtype, shape) in plan.tensors.items():
        key = lookup(name) or name
        param = to_model.get(key, key)
        if param not in params or tuple(params[param].shape) != tuple(shape):
            raise IncompatibleAdapters(f"tensor {name!r} is not a parameter of the base model of that shape",
                                       "activation merges change the base model's own parameters")
        names[name] = param
        for i, (load, src) in enumerate(zip(loaders, sources)):
            deltas[i][param] = load(src.get(name, name)).reshape(shape).float()
    originals = {p: params[p].detach().clone() for p in names.values()}
    probes = [read_probe(repo, oid) for oid in plan.probes]
    probes = probes * len(trees) if len(probes) == 1 else probes  # one shared by every input
    linear = [m for m in linear_order(model, probes[0]) if m + ".weight" in originals]

    @torch.no_grad()
    def load_weights(choose: dict[str, torch.Tensor]) -> None:
        for p, value in choose.items():
            params[p].copy_(value)

    mean = {p: originals[p] + sum(d[p] for d in deltas) / len(deltas) for p in originals}
    merged: dict[str, torch.Tensor] = {p: v for p, v in mean.items() if p.rpartition(".")[0] not in linear
                                       or not p.endswith(".weight")}
    advance = progress(f"merging with {plan.method}", len(linear), "layers")

    def own(i: int, only: str | None = None) -> dict[str, torch.Tensor]:
        """Input i's parameters (base + τ_i): all, or ``only`` one."""
        return {p: originals[p] + deltas[i][p] for p in ([only] if only else originals)}

    if method.chained:
        load_weights(merged)
        for module in linear:
            w = module + ".weight"
            grams = [input_grams(model, probes[i], [module], stop=True)[module] for i in range(len(trees))]
            merged[w] = _solve(method, module, [(own(i, w)[w], g) for i, g in enumerate(grams)], plan.params)
            load_weights({w: merged[w]})
            advance(1)
    else:
        grams_of = []
        for i in range(len(trees)):
            load_weights(own(i))
            grams_of.append(input_grams(model, probes[i], linear))
        for module in linear:
            w = module + ".weight"
            merged[w] = _solve(method, module, [(own(i, w)[w], g[module]) for i, g in enumerate(grams_of)], plan.params)
            advance(1)
    load_weights(originals)
    entries: dict[str, TensorEntry] = {}
    for name, (dtype, _shape) in plan.tensors.items():
        p = names[name]
        out = TORCH_DTYPES[plan.dtype or dtype]
        entries[name] = put_tensor(repo, (merged[p] - originals[p]).to(out).contiguous())
    return repo.store.write_tree(Tree("task_vector", {}, entries))


def _solve(method: MergeMethod, module: str, layers: list[tuple[torch.Tensor, torch.Tensor]],
           params: dict[str, Any]) -> torch.Tensor:
    """The method's merged weight of ``module``; BadInput where the probes leave it undetermined."""
    try:
        return method(layers, **params)
    except torch.linalg.LinAlgError:
        raise BadInput(f"linear module {module!r}: the Gram matrices of its inputs on the probes sum to a singular matrix "
                       "(an input feature the probes never reach)", "use more probe data, or a ratio below 1") from None
