"""What DoRA, LoHa, LoKr and IA3 modules do to their base weights, computed as peft does when it
merges an adapter into its base (``merge_and_unload``, peft 0.21: ``tuners/lora/variants.py``
``DoraLinearVariant.merge_unsafe``, ``tuners/loha/layer.py`` ``HadaWeight``, ``tuners/lokr/layer.py``
``get_delta_weight``/``make_kron``, ``tuners/ia3/layer.py`` ``Linear.merge``), op for op and in the
same dtypes, so that a fold is bit-identical to peft's. Linear layers only (``peft_kinds`` refuses
convolutions). An update for a merge is the same change: LoHa's and LoKr's delta as peft adds it;
DoRA's and IA3's merged weight minus the base weight (they rescale the weight, they do not add).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .lora import pattern_value, scaling
from .peft_kinds import PeftModule, peft_type

Load = Callable[[str], Tensor]


def _t(x: Tensor, fan_in_fan_out: bool) -> Tensor:
    return x.T if fan_in_fan_out else x


def _scale(config: Mapping[str, Any], module: str) -> float:
    """LyCORIS' alpha / r for ``module`` (rank_pattern and alpha_pattern matched as peft matches them)."""
    r = pattern_value(module, config.get("rank_pattern") or {}, config.get("r", 8))
    return float(pattern_value(module, config.get("alpha_pattern") or {}, config.get("alpha", 8))) / float(r)


def lycoris_delta(config: Mapping[str, Any], m: PeftModule, load: Load, shape: torch.Size) -> Tensor:
    """LoHa's ((W1a W1b) ⊙ (W2a W2b)) · s, or LoKr's (W1 ⊗ W2) · s, reshaped to the base weight's ``shape``."""
    k, s = m.keys, _scale(config, m.name)
    if peft_type(config) == "LOHA":
        w = ((load(k["hada_w1_a"]) @ load(k["hada_w1_b"])) * (load(k["hada_w2_a"]) @ load(k["hada_w2_b"]))) * torch.tensor(s)
        return w.reshape(shape)
    w1 = load(k["lokr_w1"]) if "lokr_w1" in k else load(k["lokr_w1_a"]) @ load(k["lokr_w1_b"])
    w2 = load(k["lokr_w2"]) if "lokr_w2" in k else load(k["lokr_w2_a"]) @ load(k["lokr_w2_b"])
    return (torch.kron(w1, w2.contiguous()) * s).reshape(shape)


def merged_weight(config: Mapping[str, Any], m: PeftModule, load: Load, w: Tensor) -> Tensor:
    """The weight peft's merge writes for base weight ``w`` (in ``w``'s dtype)."""
    kind, fifo = peft_type(config), bool(config.get("fan_in_fan_out"))
    if kind in ("LOHA", "LOKR"):
        return (w + lycoris_delta(config, m, load, w.shape)).to(w.dtype)
    if kind == "IA3":
        return torch.mul(w, _t(load(m.keys["ia3_l"]), fifo)).to(w.dtype)
    a, b = load(m.keys["lora_A.weight"]), load(m.keys["lora_B.weight"])  # DoRA
    half = b.dtype in (torch.float16, torch.bfloat16)  # peft multiplies half factors in fp32 on the CPU
    delta = _t((b.float() @ a.float()) if half else (b @ a), fifo) * scaling(config, m.name)
    delta = delta.to(b.dtype) if half else delta
    weight = _t(w, fifo) + 1 * _t(delta, fifo)
    norm = torch.linalg.norm(weight, dim=1).to(weight.dtype)
    factor = _t((load(m.keys["lora_magnitude_vector"]) / norm).view(-1, 1), fifo)
    return (factor * (w + delta)).to(w.dtype)


def merged_bias(config: Mapping[str, Any], m: PeftModule, load: Load, bias: Tensor) -> Tensor:
    """The bias peft's merge writes for an IA3 module that scales its output rows (``bias``'s dtype)."""
    return torch.mul(bias, load(m.keys["ia3_l"]).reshape(bias.shape)).to(bias.dtype)


def update(config: Mapping[str, Any], m: PeftModule, load: Load, base: Tensor, bias: bool = False) -> Tensor:
    """The change (fp32) the module makes to its base weight (``bias``: to its base bias), as a merge applies it."""
    if bias:
        return merged_bias(config, m, load, base).float() - base.float()
    if peft_type(config) in ("LOHA", "LOKR"):
        return lycoris_delta(config, m, load, base.shape).float()
    return merged_weight(config, m, load, base).float() - base.float()
