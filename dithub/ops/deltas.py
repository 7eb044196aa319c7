"""What the operations share: an input read as deltas on its base's checkpoint names (a LoRA's
modules expanded to ΔW, a fine-tune as θ − θ_base; their names, dtypes and shapes: ``delta_specs``),
dtype promotion between inputs, and storing a tensor."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from ..errors import IncompatibleAdapters
from ..formats import base_key_lookup, lora_modules, plan_edits
from ..formats.lora import strip_prefix
from ..formats.peft_merge import update as peft_update
from ..formats.merge_into import lora_delta
from ..formats.torch_io import from_torch, to_torch
from ..store import ObjectId, TensorEntry, Tree
from ..store.view import RepoView


def common_dtype(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Inputs of different float dtypes, promoted to one (the same tensors when they agree, so a
    merge of same-dtype inputs computes as it always did)."""
    if len({t.dtype for t in tensors}) <= 1:
        return tensors
    out = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    return [t.to(out) for t in tensors]


def delta_loader(repo: RepoView, tree: Tree, base: ObjectId | None) -> Callable[[str], torch.Tensor]:
    """Each output tensor of an input as a delta: as stored, ΔW of a LoRA module, or whole − base (a
    LoRA's saved modules, every tensor of a fine-tune)."""
    def stored(key: str) -> torch.Tensor:
        return to_torch(repo.store.read_tensor(tree.tensors[key].id))

    if tree.kind in ("full", "peft") and base is not None:
        checkpoint = repo.store.read_tree(base)
        of_base = lambda name: to_torch(repo.store.read_tensor(checkpoint.tensors[name].id))  # noqa: E731
        if tree.kind == "full":
            return lambda name: stored(name).float() - of_base(name).float()
        edits = plan_edits(checkpoint, tree)
        return lambda name: peft_update(tree.config, edits[name].peft, stored, of_base(name), edits[name].bias)  # type: ignore[arg-type]
    if tree.kind != "lora":
        return stored
    modules = {name + ".weight": m for name, m in lora_modules(tree.tensors).items()}
    whole = {strip_prefix(k): k for k in tree.tensors}
    base_tree = repo.store.read_tree(base) if base else None
    lookup = base_key_lookup(base_tree) if base_tree else None

    def load(name: str) -> torch.Tensor:
        if name in modules:
            m = modules[name]
            return lora_delta(tree.config, m, stored(m.a_key), stored(m.b_key))
        assert base_tree is not None and lookup is not None
        base_key = lookup(name)
        if base_key is None:
            raise IncompatibleAdapters(f"adapter tensor {name!r} has no matching tensor in the base checkpoint")
        return stored(whole[name]).float() - to_torch(repo.store.read_tensor(base_tree.tensors[base_key].id)).float()

    return load


def put_tensor(repo: RepoView, tensor: Any) -> TensorEntry:
    raw = from_torch(tensor)
    return TensorEntry(repo.store.write_tensor(raw.dtype, raw.shape, raw.data), raw.dtype, raw.shape)
