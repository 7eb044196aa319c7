"""Fold an adapter into its base checkpoint: full weights W + ΔW.

LoRA: ΔW = s · B @ A per module (s from ``lora.scaling``; transposed for
embeddings and ``fan_in_fan_out`` layers); tensors peft saves whole
(``modules_to_save``, trained biases) replace the base tensor. Task vectors:
W + τ. Computed in fp32 and stored in the base tensor's dtype.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..errors import IncompatibleAdapters
from ..store import TensorData, Tree
from .exporters import Loader, OnBytes, write_model_dir
from .hf_names import model_names
from .lora import LoraModule, lora_modules, match_base_key, scaling
from .torch_io import from_torch, to_torch


class _Shaped(Protocol):
    shape: tuple[int, ...]


class AdapterLike(Protocol):
    """A stored ``Tree`` or a freshly imported ``Staged`` adapter."""

    kind: str
    config: dict[str, Any]
    tensors: Mapping[str, _Shaped]


@dataclass(frozen=True)
class _Edit:
    kind: str  # "lora", "add" or "replace"
    key: str
    module: LoraModule | None = None


def lora_delta(config: dict, module: LoraModule, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ΔW of one LoRA module, in fp32, shaped like the base weight."""
    delta = (b.float() @ a.float()) * scaling(config, module.name)
    return delta.T if module.embedding or config.get("fan_in_fan_out") else delta


def plan_edits(base: Tree, adapter: AdapterLike) -> dict[str, _Edit]:
    """Map each base tensor to the adapter tensor(s) that change it; refuse strays.

    Adapter keys name the loaded model's parameters, which may differ from
    the checkpoint's names (see ``hf_names``); edits are keyed by checkpoint name.
    """
    to_checkpoint = {m: c for c, m in model_names(base.config, base.tensors).items()}
    edits: dict[str, _Edit] = {}

    def claim(model_key: str | None, edit: _Edit) -> None:
        if model_key is None:
            raise IncompatibleAdapters(
                f"adapter tensor {edit.key!r} has no matching tensor in the base checkpoint",
                "is the adapter built on this base? check --base / --merge-into",
            )
        edits[to_checkpoint[model_key]] = edit

    if adapter.kind == "lora":
        modules = lora_modules(adapter.tensors)
        factor_keys = {k for m in modules.values() for k in (m.a_key, m.b_key)}
        for m in modules.values():
            claim(match_base_key(m.name + ".weight", to_checkpoint), _Edit("lora", m.a_key, m))
        for key in adapter.tensors:
            if key not in factor_keys:
                claim(match_base_key(key, to_checkpoint), _Edit("replace", key))
    else:
        for key in adapter.tensors:
            claim(match_base_key(key, to_checkpoint), _Edit("add", key))
    return edits


def check_fits(base: Tree, adapter: AdapterLike) -> None:
    """Raise IncompatibleAdapters unless every adapter tensor fits its base tensor's shape."""
    for base_key, edit in plan_edits(base, adapter).items():
        want = base.tensors[base_key].shape
        if edit.kind == "lora":
            assert edit.module is not None
            a = adapter.tensors[edit.module.a_key].shape
            b = adapter.tensors[edit.module.b_key].shape
            got = (b[0], a[1])
            if edit.module.embedding or adapter.config.get("fan_in_fan_out"):
                got = (a[1], b[0])
        else:
            got = adapter.tensors[edit.key].shape
        if tuple(got) != tuple(want):
            raise IncompatibleAdapters(
                f"adapter tensor {edit.key!r} updates a {list(got)} weight but base tensor {base_key!r} is {list(want)}",
                "the adapter was trained on another base checkpoint",
            )


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
        if edit.kind == "add":
            delta = to_torch(load_adapter(edit.key)).float()
        else:
            assert edit.module is not None
            a, b = to_torch(load_adapter(edit.module.a_key)), to_torch(load_adapter(edit.module.b_key))
            delta = lora_delta(adapter.config, edit.module, a, b)
        return from_torch((w.float() + delta).to(w.dtype)).data

    return load


def write_merged_model(
    out: Path, base: Tree, load_base: Loader, adapter: Tree, load_adapter: Loader, on_bytes: OnBytes = None
) -> Path:
    """A model directory with full weights, loadable with ``from_pretrained``."""
    load = merged_loader(base, load_base, adapter, load_adapter)
    return write_model_dir(out, base.config, base.tensors, load, on_bytes)
