"""A defence applied to a merge's result (``merge --defend``): each tensor the recorded vector holds
goes through the defence method (``algorithms.defend``: IBVS subtracts the injected backdoor vector),
computed in fp32 and stored in the merge's dtype; the others are the merge's, unchanged."""
from __future__ import annotations

from ...algorithms.defend import REGISTRY as DEFENSES
from ...formats.torch_io import TORCH_DTYPES, to_torch
from ...store import ObjectId, Tree
from ...store.view import RepoView
from ..deltas import delta_loader, put_tensor
from .plan import MergePlan, defense_names


def defend(repo: RepoView, plan: MergePlan, merged_id: ObjectId) -> ObjectId:
    """The tree of merge ``merged_id`` with ``plan.defense`` applied; stored."""
    assert plan.defense is not None
    spec = dict(plan.defense)
    method = DEFENSES.lookup(spec.pop("method"))
    vector_tree = repo.store.read_tree(spec.pop("vector"))
    vector = delta_loader(repo, vector_tree, plan.base)
    merged = repo.store.read_tree(merged_id)
    entries = dict(merged.tensors)
    for name, own in defense_names(repo, plan, vector_tree).items():
        entry = merged.tensors[name]
        out = method.fn(to_torch(repo.store.read_tensor(entry.id)), vector(own).reshape(entry.shape), **spec)
        entries[name] = put_tensor(repo, out.to(TORCH_DTYPES[entry.dtype]).contiguous())
    return repo.store.write_tree(Tree(merged.kind, merged.config, entries))

