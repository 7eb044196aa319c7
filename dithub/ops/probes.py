"""Probe sets stored in the repository: the data an op measured on (an activation merge, a class
edit), as ``probe`` trees its commit names in ``Op.data``, so replay and revert read it from the
store, never from a path."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BadInput
from ..eval import Probe, load_probe
from ..formats.torch_io import to_torch
from ..store import ObjectId, Tree
from ..store.view import RepoView
from .deltas import put_tensor

PROBE_BATCH = 256


def store_probe(repo: RepoView, spec: str) -> ObjectId:
    """A probe file (or entry point) read and stored as a ``probe`` tree; its id."""
    probe = load_probe(spec, labels=False)
    inputs = torch.cat([x for x, _ in probe.batches])
    tensors = {"inputs": put_tensor(repo, inputs.contiguous())}
    if probe.labelled:
        tensors["labels"] = put_tensor(repo, torch.cat([y for _, y in probe.batches]).contiguous())
    return repo.store.write_tree(Tree("probe", {"source": Path(spec).name[:200]}, tensors))


def read_probe(repo: RepoView, oid: ObjectId) -> Probe:
    """A stored probe tree as a probe set (batches of ``PROBE_BATCH``)."""
    tree = repo.store.read_tree(oid)
    if tree.kind != "probe" or "inputs" not in tree.tensors:
        raise BadInput(f"object {oid[:12]} is not a stored probe set")
    x = to_torch(repo.store.read_tensor(tree.tensors["inputs"].id))
    y = (to_torch(repo.store.read_tensor(tree.tensors["labels"].id)) if "labels" in tree.tensors
         else torch.full((len(x),), -1, dtype=torch.long))
    return Probe([(x[i : i + PROBE_BATCH], y[i : i + PROBE_BATCH]) for i in range(0, len(x), PROBE_BATCH)],
                 str(tree.config.get("source", oid[:12])), labelled="labels" in tree.tensors)
