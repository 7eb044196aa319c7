"""Probe sets: small labelled batches that score a model (merge --alpha auto, rebase, verify).

A probe is a safetensors file with ``inputs`` and ``labels`` tensors, or a Python entry point
``module:function`` returning an iterable of (inputs, labels) batches. ``inputs`` is what the base
model's main input takes (``pixel_values`` for a ViT: float (N, C, H, W); ``input_ids`` for a BERT:
integer (N, L)); ``labels`` are integer class ids (N,). A method that needs only inputs (rebase
``theseus``) also takes a file without ``labels``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BadInput
from .entry import load_entry_point


@dataclass(frozen=True)
class Probe:
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    source: str
    labelled: bool = True
    """False for an inputs-only file (its labels read as -1)."""

    @property
    def size(self) -> int:
        return sum(len(labels) for _, labels in self.batches)


def load_probe(spec: str, batch_size: int = 256, *, labels: bool = True,
               forbid: Iterable[str | os.PathLike[str]] = ()) -> Probe:
    """Read a probe from a safetensors file or a ``module:function`` entry point (never a module
    inside a folder of ``forbid``: see ``eval.entry``); with ``labels=False`` a file without labels
    is accepted."""
    path = Path(spec)
    if not path.exists() and ":" in spec:
        batches = list(load_entry_point(spec, "probe", forbid)())
        return Probe([(x, y) for x, y in batches], spec)
    if not path.is_file():
        raise BadInput(f"{spec}: no such probe file", "give a .safetensors file with inputs and labels, or module:function")
    from ..formats import read_safetensors, to_torch

    tensors = read_safetensors(path).tensors
    missing = [k for k in ("inputs", "labels") if k not in tensors and (labels or k == "inputs")]
    if missing:
        raise BadInput(f"{spec}: probe lacks tensor {missing[0]!r}", "a probe holds 'inputs' and 'labels'")
    x = to_torch(tensors["inputs"])
    y = to_torch(tensors["labels"]) if "labels" in tensors else torch.full((len(x),), -1, dtype=torch.long)
    if len(x) != len(y):
        raise BadInput(f"{spec}: {len(x)} inputs but {len(y)} labels")
    return Probe([(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)], spec,
                 labelled="labels" in tensors)
