"""Write stored trees back to disk: peft directories, safetensors files, model directories.

Tensors stream one at a time from the store to an atomic temp file; an output
directory that did not exist appears whole or not at all.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..store import ObjectId, TensorData, TensorEntry, Tree, atomic_write, nbytes_of
from .importers import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MODEL_CONFIG
from .safetensors_io import Buffer, write_layout, write_safetensors

GENERATED = {"format": "pt"}
"""The metadata ``save_pretrained`` gives every weight file, and dithub every file it computes."""
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"

Loader = Callable[[str], TensorData]
RawLoader = Callable[[str], Buffer | Iterable[Buffer]]
"""A tensor's raw bytes by name, whole or in chunks (see ``write_safetensors``)."""
OnBytes = Callable[[int], None] | None


@contextmanager
def output_dir(out: Path) -> Iterator[Path]:
    """A directory to fill; a new ``out`` appears only once it is complete."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: exists and is not a directory", "choose another output path")
    if out.is_dir():
        yield out  # each file inside is still replaced atomically
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_bytes(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def write_peft_dir(out: Path, config: dict[str, Any], specs: Mapping[str, TensorEntry | TensorData], load: RawLoader,
                   on_bytes: OnBytes = None) -> Path:
    """A directory ``PeftModel.from_pretrained`` loads (``adapter_config.json`` holding ``config``),
    tensors bit-identical."""
    with output_dir(out) as d:
        write_safetensors(d / ADAPTER_WEIGHTS, specs, load, GENERATED, on_bytes)
        atomic_write(d / ADAPTER_CONFIG, _json_bytes(config))
    return Path(out)


def write_task_vector(out: Path, tree: Tree, load: RawLoader, on_bytes: OnBytes = None, *, generated: bool = False) -> Path:
    """A safetensors file (``out`` itself if it ends in .safetensors, else inside ``out``): a committed
    task vector with the metadata it came with, a ``generated`` one (a merge's) with ``GENERATED``."""
    out = Path(out)
    metadata = tree.config.get("metadata") or (GENERATED if generated else None)
    if out.suffix == ".safetensors":
        write_safetensors(out, tree.tensors, load, metadata, on_bytes)
        return out
    with output_dir(out) as d:
        write_safetensors(d / "task_vector.safetensors", tree.tensors, load, metadata, on_bytes)
    return out / "task_vector.safetensors"


def write_model_dir(out: Path, config: dict[str, Any], specs: Mapping[str, TensorEntry | TensorData], load_raw: RawLoader,
                    on_bytes: OnBytes = None, *, max_shard_bytes: int | None = None, extra: Mapping[str, bytes] | None = None) -> Path:
    """A Hugging Face model directory (config.json, then ``model.safetensors``, or shards of at most
    ``max_shard_bytes`` with ``model.safetensors.index.json`` as ``save_pretrained`` writes them) and
    ``extra`` files (tokenizer, generation config, model card; a config.json among them is used as is)."""
    shards = shard(specs, max_shard_bytes)
    with output_dir(out) as d:
        if len(shards) == 1:
            write_safetensors(d / WEIGHTS, specs, load_raw, GENERATED, on_bytes)
        else:
            names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
            for name, part in zip(names, shards):
                write_safetensors(d / name, {k: specs[k] for k in part}, load_raw, GENERATED, on_bytes)
            index = {"metadata": {"total_size": sum(nbytes_of(t.dtype, t.shape) for t in specs.values())},
                     "weight_map": {k: name for name, part in zip(names, shards) for k in part}}
            atomic_write(d / WEIGHTS_INDEX, _json_bytes(index))
        files = dict(extra or {})
        atomic_write(d / MODEL_CONFIG, files.pop(MODEL_CONFIG) if MODEL_CONFIG in files else _json_bytes(config))
        for name, data in files.items():
            atomic_write(d / name, data)
    return Path(out)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
DEFAULT_SHARD = "5GB"
"""``save_pretrained``'s default ``max_shard_size``."""


def byte_size(text: str | int) -> int:
    """A size as ``save_pretrained`` takes one: bytes, or a number with KB/MB/GB/TB (powers of 10) or
    KiB/MiB/GiB/TiB (powers of 2)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(text), re.I)
        if not match:
            raise BadInput(f"{text!r} is not a size", "write bytes or a number with a unit, e.g. 5GB, 500MB, 64KiB")
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])
    if value < 1:
        raise BadInput(f"size {text!r} must be at least one byte")
    return value


def shard(specs: Mapping[str, TensorEntry | TensorData], max_bytes: int | None) -> list[list[str]]:
    """Tensors by name, in groups of at most ``max_bytes`` (a tensor larger than the limit alone in
    its shard), as huggingface_hub's ``split_torch_state_dict_into_shards`` groups them for ``save_pretrained``."""
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(specs):
        n = nbytes_of(specs[name].dtype, specs[name].shape)
        if max_bytes is not None and shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def write_tree(out: Path, tree: Tree, load: RawLoader, on_bytes: OnBytes = None,
               read_blob: Callable[[ObjectId], bytes] | None = None, *, generated: bool = False,
               extra: Mapping[str, bytes] | None = None) -> Path:
    """Write any tree in its own format: the files it kept, each byte for byte (a safetensors file
    from its header and its tensors; reading them needs ``read_blob``), and its weights in their format
    where no kept file holds them; then ``extra`` files (a model card), which replace kept ones.
    Returns ``out``, or for a task vector the safetensors file in it."""
    extra = dict(extra or {})
    kept = {name: f for name, f in tree.files.items() if name not in extra} if read_blob is not None else {}
    if tree.kind == "task_vector" and Path(out).suffix == ".safetensors":
        return write_task_vector(out, tree, load, on_bytes, generated=generated)
    written = Path(out)
    with output_dir(out) as d:
        if not any(f.header for f in kept.values()):  # no kept safetensors file: the weights in the kind's own format
            if tree.kind == "full":
                write_model_dir(d, tree.config, tree.tensors, load, on_bytes)
            elif tree.kind == "lora":
                write_peft_dir(d, tree.config, tree.tensors, load, on_bytes)
            else:
                written = written / write_task_vector(d, tree, load, on_bytes, generated=generated).name
        for name, f in kept.items():
            assert read_blob is not None
            if f.blob is not None:
                atomic_write(d / name, read_blob(f.blob))
            else:
                write_layout(d / name, read_blob(f.header or ""), f.tensors, tree.tensors, load, on_bytes)
        for name, data in extra.items():
            atomic_write(d / name, data)
    return written
