"""The structure of a peft LoRA adapter: modules, factor pairs, scaling, ΔW.

peft saves ``base_model.model.<module>.lora_A.weight`` (r x in) and ``…lora_B.weight`` (out x r);
embeddings use ``lora_embedding_A/B``. The update of a module is ΔW = s · B @ A with s = alpha / r
(alpha / sqrt(r) with rsLoRA), r and alpha possibly overridden per module by ``rank_pattern`` and
``alpha_pattern`` (LoRA, arXiv 2106.09685; rsLoRA, arXiv 2312.03732)."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput

PEFT_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<emb>embedding_)?(?P<which>[AB])(?:\.weight)?$")


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: its name (without the peft prefix) and factor keys."""

    name: str
    a_key: str
    b_key: str
    embedding: bool


def strip_prefix(key: str) -> str:
    return key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key


def lora_modules(tensor_names: Iterable[str], where: str = "adapter") -> dict[str, LoraModule]:
    """Pair every ``lora_A`` with its ``lora_B``; an unpaired factor is an error."""
    halves: dict[str, dict[str, str]] = {}
    embedding: dict[str, bool] = {}
    for key in tensor_names:
        m = _KEY.match(key)
        if m:
            module = strip_prefix(m["module"])
            halves.setdefault(module, {})[m["which"]] = key
            embedding[module] = bool(m["emb"])
    out = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            have = next(iter(pair.values()))
            missing = "lora_B" if "A" in pair else "lora_A"
            raise BadInput(f"{where}: tensor {have!r} has no matching {missing}", "the adapter file is incomplete")
        out[module] = LoraModule(module, pair["A"], pair["B"], embedding[module])
    return out


def pattern_value(module: str, patterns: Mapping[str, Any], default: Any) -> Any:
    """peft's rule: the first pattern key that matches the end of the module name."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def rank_and_alpha(config: Mapping[str, Any], module: str) -> tuple[int, float]:
    r = int(pattern_value(module, config.get("rank_pattern") or {}, config.get("r", 8)))
    alpha = float(pattern_value(module, config.get("alpha_pattern") or {}, config.get("lora_alpha", 8)))
    return r, alpha


def scaling(config: Mapping[str, Any], module: str) -> float:
    """The factor s in ΔW = s · B @ A for ``module``."""
    r, alpha = rank_and_alpha(config, module)
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def targets_module(targets: str | Sequence[str] | None, module: str) -> bool:
    """peft's matching of ``target_modules`` against a module name."""
    if targets is None:
        return False
    if isinstance(targets, str):
        return targets == "all-linear" or re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def check_targets(config: Mapping[str, Any], modules: Mapping[str, str], where: str) -> None:
    """BadInput for an adapted module (name -> one of its tensors) that ``target_modules`` does not name."""
    targets = config.get("target_modules")
    for name, key in modules.items():
        if not targets_module(targets, name):
            raise BadInput(f"{where}: tensor {key!r} adapts module {name!r}, which target_modules {targets!r} does not name",
                           "fix target_modules in adapter_config.json to match the tensors")


def check_lora(config: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], where: str) -> dict[str, LoraModule]:
    """Check factors against the config: pairs, ranks, target modules."""
    modules = lora_modules(shapes, where)
    if not modules:
        raise BadInput(f"{where}: no lora_A/lora_B tensors found", "is this a LoRA adapter saved by peft?")
    check_targets(config, {m.name: m.a_key for m in modules.values()}, where)
    targets = config.get("target_modules")
    for m in modules.values():
        a, b = shapes[m.a_key], shapes[m.b_key]
        r, _ = rank_and_alpha(config, m.name)
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise BadInput(f"{where}: {m.a_key!r} {list(a)} and {m.b_key!r} {list(b)} do not multiply")
        if a[0] != r:
            raise BadInput(f"{where}: {m.a_key!r} has rank {a[0]} but the config says r={r}",
                           "fix r (or rank_pattern) in adapter_config.json")
    if isinstance(targets, (list, tuple)):
        for t in targets:
            if not any(m.name == t or m.name.endswith("." + t) for m in modules.values()):
                raise BadInput(f"{where}: target module {t!r} has no lora tensors",
                               "remove it from target_modules or add its lora_A/lora_B tensors")
    return modules


def match_base_key(key: str, base_names: Iterable[str]) -> str | None:
    """The base tensor an adapter key (module weight or saved module) belongs to: an exact match
    after removing peft's prefix first, then a unique match that differs only by leading model
    prefixes (``vit.`` / ``bert.``) on either side."""
    names = base_names if isinstance(base_names, (set, frozenset, dict)) else set(base_names)
    key = strip_prefix(key)
    if key in names:
        return key
    parts = key.split(".")
    for i in range(1, len(parts) - 1):
        if ".".join(parts[i:]) in names:
            return ".".join(parts[i:])
    hits = [n for n in names if n.endswith("." + key)]
    return hits[0] if len(hits) == 1 else None
