"""What an input's deltas are — names, dtypes and shapes, without reading a tensor (``deltas``
reads them): a LoRA's modules expanded to ΔW, a fine-tune's float tensors as θ − θ_base, a peft
adapter's changes to its base's tensors; and the dtype inputs of several float dtypes merge in."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import IncompatibleAdapters
from ..formats import lora_modules, plan_edits
from ..formats.lora import strip_prefix
from ..formats.peft_kinds import peft_type
from ..store import Tree


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


def promoted(dtypes: Sequence[str]) -> str:
    """The dtype inputs of these (float) dtypes are merged in: the first if all agree, else their
    promotion as torch promotes (F64 with any; else F32: BF16 and F16 give F32)."""
    if len(set(dtypes)) == 1:
        return dtypes[0]
    return "F64" if "F64" in dtypes else "F32"
