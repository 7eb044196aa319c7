"""Import and export: peft adapter dirs, safetensors task vectors, full checkpoints."""
from .exporters import output_dir, write_model_dir, write_peft_dir, write_task_vector, write_tree
from .importers import Staged, import_adapter, import_model_dir, import_peft_dir, import_task_vector
from .lora import LoraModule, check_lora, lora_modules, match_base_key, scaling
from .merge_into import check_fits, lora_delta, merged_loader, write_merged_model
from .safetensors_io import SafetensorsFile, read_safetensors, write_safetensors
from .torch_io import DTYPE_NAMES, TORCH_DTYPES, from_torch, to_torch

__all__ = [
    "output_dir", "write_model_dir", "write_peft_dir", "write_task_vector", "write_tree",
    "Staged", "import_adapter", "import_model_dir", "import_peft_dir", "import_task_vector",
    "LoraModule", "check_lora", "lora_modules", "match_base_key", "scaling",
    "check_fits", "lora_delta", "merged_loader", "write_merged_model",
    "SafetensorsFile", "read_safetensors", "write_safetensors",
    "DTYPE_NAMES", "TORCH_DTYPES", "from_torch", "to_torch",
]
