"""What the operations share: an input as deltas on its base's checkpoint names (a LoRA's modules
expanded to ΔW, a fine-tune as θ − θ_base), dtype promotion between inputs, and storing a tensor."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import IncompatibleAdapters
from ..formats import base_key_lookup, lora_modules, plan_edits
from ..formats.lora import strip_prefix
from ..formats.peft_kinds import peft_type
from ..formats.peft_merge import update as peft_update
from ..formats.merge_into import lora_delta
from ..formats.torch_io import DTYPE_NAMES, TORCH_DTYPES, from_torch, to_torch
from ..store import ObjectId, TensorEntry, Tree
from ..store.view import RepoView


FLOATS = frozenset({"F64", "F32", "F16", "BF16"})
"""The dtypes a fine-tune's tensors have deltas in (its other tensors must be its base's)."""


def delta_specs(tree: Tree, base: Tree | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """What ``delta_loader`` gives for ``tree``: a LoRA expanded (``expanded_specs``), a fine-tune's
    float tensors (``base``: the checkpoint it was fine-tuned from), else its tensors as stored."""
    if tree.kind == "lora":
        return expanded_specs(tree)
    if tree.kind == "peft":  # DoRA, LoHa, LoKr, IA3: the change to each base tensor, by its checkpoint name
        if base is None:
            raise IncompatibleAdapters(f"{peft_type(tree.config)} updates are computed on the base checkpoint, and this "
                                       "adapter records none", "commit it with --base NAME")
        return {key: (base.tensors[key].dtype, tuple(base.tensors[key].shape)) for key in plan_edits(base, tree)}
    if tree.kind == "full":
        if base is None:
            raise IncompatibleAdapters("a full checkpoint merges as a fine-tune, θ − θ_base, and this one records no base",
                                       "commit fine-tunes with --base NAME")
        for n, e in tree.tensors.items():
            if n not in base.tensors or (e.dtype not in FLOATS and e.id != base.tensors[n].id):
                raise IncompatibleAdapters(f"fine-tune tensor {n!r} ({e.dtype}) is not in its base, or differs from it in a dtype "
                                           "without deltas", "merge fine-tunes whose integer tensors are their base's")
        return {n: (e.dtype, tuple(e.shape)) for n, e in tree.tensors.items() if e.dtype in FLOATS}
    return {n: (e.dtype, tuple(e.shape)) for n, e in tree.tensors.items()}


def expanded_specs(tree: Tree) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Output tensors of a LoRA expanded to ΔW: one per module, plus the whole tensors."""
    modules = lora_modules(tree.tensors)
    specs: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, m in modules.items():
        a, b = tree.tensors[m.a_key], tree.tensors[m.b_key]
        transposed = m.embedding or tree.config.get("fan_in_fan_out")
        specs[name + ".weight"] = (b.dtype, (a.shape[1], b.shape[0]) if transposed else (b.shape[0], a.shape[1]))
    factor_keys = {k for m in modules.values() for k in (m.a_key, m.b_key)}
    for key, e in tree.tensors.items():
        if key not in factor_keys:
            specs[strip_prefix(key)] = (e.dtype, e.shape)
    return specs


def common_dtype(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Inputs of different float dtypes, promoted to one (the same tensors when they agree, so a
    merge of same-dtype inputs computes as it always did)."""
    if len({t.dtype for t in tensors}) <= 1:
        return tensors
    out = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    return [t.to(out) for t in tensors]


def promoted(dtypes: Sequence[str]) -> str:
    """The dtype inputs of these (float) dtypes are merged in: the first if all agree, else their
    promotion (BF16 and F16 give F32)."""
    return dtypes[0] if len(set(dtypes)) == 1 else DTYPE_NAMES[functools.reduce(torch.promote_types, [TORCH_DTYPES[d] for d in dtypes])]


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
