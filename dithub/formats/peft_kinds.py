"""The peft adapter types beside plain LoRA: DoRA, LoHa, LoKr and IA3 (a tree of kind ``peft``).

Their tensors are tensors like any other; this module says which belong to which adapted module and
what shape of update each module makes, so that a commit can check the adapter against its base:

* DoRA — Liu et al., arXiv 2402.09353: a LoRA pair (``lora_A``/``lora_B``) and a magnitude vector
  (``lora_magnitude_vector``, one entry per output row); peft_type LORA with ``use_dora``.
* LoHa — Hyeon-Woo et al., arXiv 2108.06098 (LyCORIS): ΔW = s · (W1a W1b) ⊙ (W2a W2b), s = alpha / r.
* LoKr — Yeh et al., arXiv 2309.14859 (LyCORIS): ΔW = s · W1 ⊗ W2, each factor whole or a product.
* IA3 — Liu et al., arXiv 2205.05638: a learned vector scales a layer's output rows (its input
  columns for ``feedforward_modules``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput, IncompatibleAdapters
from .lora import check_targets, strip_prefix

TYPES = ("DORA", "LOHA", "LOKR", "IA3")
_ROLES = {
    "DORA": ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"),
    "LOHA": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
    "LOKR": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
    "IA3": ("ia3_l",),
}
_NEEDED: dict[str, list[tuple[str, ...]]] = {"DORA": [("lora_A.weight",), ("lora_B.weight",), ("lora_magnitude_vector",)],
           "LOHA": [("hada_w1_a",), ("hada_w1_b",), ("hada_w2_a",), ("hada_w2_b",)],
           "LOKR": [("lokr_w1", "lokr_w1_a"), ("lokr_w2", "lokr_w2_a")], "IA3": [("ia3_l",)]}
"""Per type: the roles a module must have (one of each group)."""


@dataclass(frozen=True)
class PeftModule:
    """One adapted module: its name (without the peft prefix) and its tensors' keys by role."""

    name: str
    keys: dict[str, str]


def peft_type(config: Mapping[str, Any]) -> str:
    """``DORA``, ``LOHA``, ``LOKR`` or ``IA3`` for a config of one of those types (else ``LORA``, or
    BadInput for a type dithub does not read)."""
    kind = str(config.get("peft_type", "LORA"))
    if kind == "LORA":
        return "DORA" if config.get("use_dora") else "LORA"
    if kind not in TYPES:
        raise BadInput(f"peft_type {kind!r} is not supported", "dithub stores LoRA, DoRA, LoHa, LoKr and IA3 adapters")
    return kind


def peft_modules(config: Mapping[str, Any], names: Iterable[str], where: str = "adapter") -> dict[str, PeftModule]:
    """Group an adapter's tensors by module; BadInput for a tensor of no role, or a module lacking one."""
    kind = peft_type(config)
    roles = _ROLES[kind]
    pattern = re.compile(r"^(?P<module>.+)\.(?P<role>" + "|".join(re.escape(r) for r in roles) + r")$")
    out: dict[str, dict[str, str]] = {}
    for key in names:
        m = pattern.match(key)
        if m is None:
            raise BadInput(f"{where}: tensor {key!r} is not a {kind} tensor ({', '.join(roles)})", "is the adapter config its own?")
        out.setdefault(strip_prefix(m["module"]), {})[m["role"]] = key
    for module, keys in out.items():
        for group in _NEEDED[kind]:
            if not any(role in keys for role in group):
                raise BadInput(f"{where}: module {module!r} has no {' or '.join(group)} tensor", "the adapter file is incomplete")
    return {module: PeftModule(module, keys) for module, keys in sorted(out.items())}


def update_shape(kind: str, m: PeftModule, shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """The shape of the weight module ``m`` updates, from its tensors' shapes (IA3: the one side it scales, -1 the other)."""
    s = {role: tuple(shapes[key]) for role, key in m.keys.items()}
    if kind == "DORA":
        return (s["lora_B.weight"][0], s["lora_A.weight"][1])
    if kind == "LOHA":
        return (s["hada_w1_a"][0], s["hada_w1_b"][1])
    if kind == "LOKR":
        w1 = s.get("lokr_w1") or (s["lokr_w1_a"][0], s["lokr_w1_b"][1])
        w2 = s.get("lokr_w2") or (s["lokr_w2_a"][0], s["lokr_w2_b"][-1])
        return (w1[0] * w2[0], w1[1] * w2[1])
    out, cols = s["ia3_l"]
    return (out if cols == 1 else -1, cols if out == 1 else -1)


def check_peft(config: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], where: str) -> dict[str, PeftModule]:
    """Check a DoRA/LoHa/LoKr/IA3 adapter's tensors against its config: modules, roles, target modules."""
    modules = peft_modules(config, shapes, where)
    if not modules:
        raise BadInput(f"{where}: no adapter tensors found", "is this an adapter saved by peft?")
    check_targets(config, {m.name: next(iter(m.keys.values())) for m in modules.values()}, where)
    for m in modules.values():
        if any(role in m.keys for role in ("hada_t1", "hada_t2", "lokr_t2")) or len(shapes[next(iter(m.keys.values()))]) > 2:
            raise BadInput(f"{where}: module {m.name!r} adapts a convolution", "dithub reads these adapters on linear layers")
    return modules


def not_yet(config: Mapping[str, Any], doing: str) -> IncompatibleAdapters:
    """The refusal of what dithub does not do with these adapters yet (their updates are not computed)."""
    return IncompatibleAdapters(f"{peft_type(config)} adapters are kept and checked out byte for byte, but not {doing} yet",
                                "merge, fold into a base, rebase or evaluate LoRA adapters, task vectors and fine-tunes meanwhile")
