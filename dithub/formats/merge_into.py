"""Fold an adapter into its base checkpoint: full weights W + ΔW.

LoRA: ΔW = s · B @ A per module (s from ``lora.scaling``; transposed for embeddings and
``fan_in_fan_out`` layers); tensors peft saves whole (``modules_to_save``, trained biases) replace
the base tensor. Task vectors: W + τ. Computed in fp32 and stored in the base tensor's dtype. DoRA,
LoHa, LoKr, IA3: the weights peft's own merge writes (``peft_merge``)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..store import Tree
from .exporters import Loader, OnBytes, write_model_dir
from .fit import check_fits, plan_edits
from .lora import LoraModule, scaling
from .peft_merge import merged_bias, merged_weight
from .torch_io import from_torch, to_torch


def lora_delta(config: dict[str, Any], module: LoraModule, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ΔW of one LoRA module, in fp32, shaped like the base weight."""
    delta = (b.float() @ a.float()) * scaling(config, module.name)
    return delta.T if module.embedding or config.get("fan_in_fan_out") else delta


def merged_loader(base: Tree, load_base: Loader, adapter: Tree, load_adapter: Loader) -> Callable[[str], memoryview]:
    """Bytes of each base tensor with the adapter folded in."""
    check_fits(base, adapter)
    edits = plan_edits(base, adapter)

    def load(name: str) -> memoryview:
        edit = edits.get(name)
        if edit is None:
            return load_base(name).data
        if edit.kind == "replace":
            return load_adapter(edit.key).data
        w = to_torch(load_base(name))
        if edit.kind == "peft":  # DoRA, LoHa, LoKr, IA3: the weight (or IA3's bias) exactly as peft's merge writes it
            assert edit.peft is not None
            fold = merged_bias if edit.bias else merged_weight
            return from_torch(fold(adapter.config, edit.peft, lambda key: to_torch(load_adapter(key)), w)).data
        if edit.kind == "add":
            delta = to_torch(load_adapter(edit.key)).float()
        else:
            assert edit.module is not None
            a, b = to_torch(load_adapter(edit.module.a_key)), to_torch(load_adapter(edit.module.b_key))
            delta = lora_delta(adapter.config, edit.module, a, b)
        return from_torch((w.float() + delta).to(w.dtype)).data

    return load


def write_merged_model(out: Path, base: Tree, load_base: Loader, adapter: Tree, load_adapter: Loader,
                       on_bytes: OnBytes = None, *, max_shard_bytes: int | None = None,
                       extra: Mapping[str, bytes] | None = None) -> Path:
    """A model directory with full weights, loadable with ``from_pretrained`` (sharded, and with
    ``extra`` files, as ``write_model_dir``)."""
    load = merged_loader(base, load_base, adapter, load_adapter)
    return write_model_dir(out, base.config, base.tensors, load, on_bytes, max_shard_bytes=max_shard_bytes, extra=extra)
