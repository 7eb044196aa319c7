"""Import adapters and checkpoints from disk into a ``Staged`` tree (nothing stored yet).

* a peft adapter directory (adapter_config.json + adapter_model.safetensors) -> ``lora``
* a plain ``.safetensors`` file -> ``task_vector``
* a Hugging Face model directory (config.json + *.safetensors) -> ``full``
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..store import TensorData
from ..store.objects import MAX_BLOB_BYTES, file_name_problem
from .lora import check_lora
from .peft_kinds import check_peft, peft_type
from .safetensors_io import SafetensorsFile, read_safetensors

WEIGHT_FORMATS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")
"""Weights in other formats a model directory may also hold: neither read (pickles run code) nor kept."""
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
MODEL_CARD = "README.md"


@dataclass
class Staged:
    """An adapter or checkpoint read and validated, ready to be stored."""

    kind: str
    config: dict[str, Any]
    tensors: dict[str, TensorData]
    source: Path
    files: list[SafetensorsFile] = field(default_factory=list)
    kept: dict[str, bytes | tuple[bytes, tuple[str, ...]]] = field(default_factory=dict)
    """The files a model directory holds, kept to come back byte for byte: bytes, or a safetensors
    file's header and the tensors its data section holds, in order."""

    def release(self, name: str) -> None:
        """Drop tensor ``name``'s pages from memory once it is stored."""
        for f in self.files:
            f.release(name)  # (a no-op in files that do not hold it)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def _read_config(folder: Path, name: str, what: str, hint: str) -> dict[str, Any]:
    """The JSON object in ``folder/name``; BadInput when there is none (``folder`` is then not ``what``)."""
    path = folder / name
    if not path.is_file():
        raise BadInput(f"{folder}: no {name} here, so it is not {what}", hint)
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})", "fix or re-save the file") from None
    if not isinstance(value, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return value


def import_peft_dir(path: Path) -> Staged:
    """A peft adapter directory, checked against its config: LoRA (kind ``lora``), or DoRA, LoHa,
    LoKr, IA3 (kind ``peft``: its files kept byte for byte)."""
    config = _read_config(path, ADAPTER_CONFIG, "a peft adapter directory",
                          "give the directory PeftModel.save_pretrained wrote, or a .safetensors task vector")
    try:
        kind = peft_type(config)
    except BadInput as exc:
        raise BadInput(f"{path / ADAPTER_CONFIG}: {exc.message}", exc.hint) from None
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        hint = "re-save with save_pretrained(safe_serialization=True)" if (path / "adapter_model.bin").exists() else "copy the adapter weights next to the config"
        raise BadInput(f"{path}: no {ADAPTER_WEIGHTS}", hint)
    st = read_safetensors(weights)
    if kind != "LORA":
        check_peft(config, {k: v.shape for k, v in st.tensors.items()}, str(weights))
        return Staged("peft", config, st.tensors, path, [st], _kept(path, [st]))
    check_lora(config, {k: v.shape for k, v in st.tensors.items()}, str(weights))
    card = path / MODEL_CARD
    return Staged("lora", config, st.tensors, path, [st], {MODEL_CARD: _blob(card)} if card.is_file() else {})


def import_task_vector(path: Path) -> Staged:
    """A safetensors file of per-tensor updates (θ_ft − θ_0)."""
    st = read_safetensors(path)
    if not st.tensors:
        raise BadInput(f"{path}: holds no tensors")
    return Staged("task_vector", {"metadata": st.metadata} if st.metadata else {}, st.tensors, path, [st])


def import_model_dir(path: Path) -> Staged:
    """A Hugging Face model directory (one or several safetensors shards)."""
    config = _read_config(path, MODEL_CONFIG, "a Hugging Face model directory", "give the directory save_pretrained wrote")
    shards = sorted(p for p in path.glob("*.safetensors") if p.name != ADAPTER_WEIGHTS)
    if not shards:
        raise BadInput(f"{path}: no .safetensors weights", "save the model with safe_serialization=True")
    tensors: dict[str, TensorData] = {}
    files = [read_safetensors(shard) for shard in shards]
    for shard, f in zip(shards, files):
        for name, t in f.tensors.items():
            if name in tensors:
                raise BadInput(f"{shard}: tensor {name!r} also appears in another shard")
            tensors[name] = t
    return Staged("full", config, tensors, path, files, _kept(path, files))


def _kept(path: Path, files: list[SafetensorsFile]) -> dict[str, bytes | tuple[bytes, tuple[str, ...]]]:
    """Every file of directory ``path`` to keep: its safetensors ``files`` as header and tensor order,
    the others' bytes (weights in other formats left out)."""
    layouts = {f.path.name: (f.header, order) for f in files if (order := f.order) is not None}
    kept: dict[str, bytes | tuple[bytes, tuple[str, ...]]] = {}
    for p in sorted(path.iterdir()):
        if not p.is_file() or p.suffix in WEIGHT_FORMATS:
            continue
        if problem := file_name_problem(p.name):
            raise BadInput(f"{p}: cannot be kept: {problem}", "rename it, or move it out of the model directory")
        kept[p.name] = layouts[p.name] if p.name in layouts else _blob(p)
    return kept


def _blob(path: Path) -> bytes:
    """The bytes of a file to keep (BadInput if it is larger than a blob may be)."""
    if path.stat().st_size > MAX_BLOB_BYTES:
        raise BadInput(f"{path}: {path.stat().st_size} bytes, over the {MAX_BLOB_BYTES} a kept file may have",
                       f"move it out of {path.parent}")
    return path.read_bytes()


def import_adapter(path: Path, *, models: bool = False) -> Staged:
    """Import what ``dithub commit PATH`` accepts: a peft directory or a safetensors file, and with
    ``models`` a Hugging Face model directory (a fine-tune)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory", "check the path")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise BadInput(f"{path}: not a .safetensors file", "commit a peft adapter directory or a .safetensors task vector")
        return import_task_vector(path)
    if not (path / ADAPTER_CONFIG).exists() and (path / MODEL_CONFIG).exists():
        if models:
            return import_model_dir(path)
        raise BadInput(f"{path}: is a model checkpoint, not an adapter", f"register it with `dithub base add NAME {path}`")
    return import_peft_dir(path)
