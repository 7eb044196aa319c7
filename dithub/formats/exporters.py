"""Write stored trees back to disk: peft directories, safetensors files, model directories.

Tensors stream one at a time from the store to an atomic temp file; an output
directory that did not exist appears whole or not at all.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..store import ObjectId, TensorData, TensorEntry, Tree, atomic_write
from .importers import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MODEL_CONFIG
from .safetensors_io import Buffer, write_layout, write_safetensors

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
        write_safetensors(d / ADAPTER_WEIGHTS, specs, load, {"format": "pt"}, on_bytes)
        atomic_write(d / ADAPTER_CONFIG, _json_bytes(config))
    return Path(out)


GENERATED = {"format": "pt"}
"""The metadata ``save_pretrained`` gives every weight file, and dithub every file it computes."""


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


def write_model_dir(out: Path, config: dict[str, Any], specs: dict[str, TensorEntry], load_raw: RawLoader,
                    on_bytes: OnBytes = None) -> Path:
    """A Hugging Face model directory (config.json + model.safetensors)."""
    with output_dir(out) as d:
        write_safetensors(d / "model.safetensors", specs, load_raw, {"format": "pt"}, on_bytes)
        atomic_write(d / MODEL_CONFIG, _json_bytes(config))
    return Path(out)


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
