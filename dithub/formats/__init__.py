"""Import and export: peft adapter dirs, safetensors task vectors, full checkpoints.

Names that need torch (tensor conversion, folding adapters into weights) are
imported on first use, so that commands which only move bytes start fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from .exporters import output_dir, write_model_dir, write_peft_dir, write_task_vector, write_tree
from .fit import base_key_lookup, check_fits, plan_edits
from .importers import Staged, import_adapter, import_model_dir, import_peft_dir, import_task_vector
from .lora import LoraModule, check_lora, lora_modules, match_base_key, scaling
from .safetensors_io import SafetensorsFile, read_safetensors, write_safetensors

_LAZY = {
    "lora_delta": "merge_into", "merged_loader": "merge_into", "write_merged_model": "merge_into",
    "DTYPE_NAMES": "torch_io", "TORCH_DTYPES": "torch_io", "from_torch": "torch_io", "to_torch": "torch_io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["output_dir", "write_model_dir", "write_peft_dir", "write_task_vector", "write_tree", "base_key_lookup", "check_fits",
           "plan_edits", "Staged", "import_adapter", "import_model_dir", "import_peft_dir", "import_task_vector", "LoraModule",
           "check_lora", "lora_modules", "match_base_key", "scaling", "SafetensorsFile", "read_safetensors", "write_safetensors",
           "lora_delta", "merged_loader", "write_merged_model", "DTYPE_NAMES", "TORCH_DTYPES", "from_torch", "to_torch"]
