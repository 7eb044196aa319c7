"""``dithub extract``: a LoRA adapter from a fine-tune or a task vector, by truncated SVD of each
linear layer's update, as mergekit's LoRA extraction (``mergekit-extract-lora``) does.

Each ``nn.Linear`` weight the update changes becomes a module with ΔW ≈ B A, B = U_r Σ_r and
A = V_rᵀ (the top r singular triplets of ΔW, Eckart–Young), ``lora_alpha`` = r so that peft's
scale is 1; its relative error ‖ΔW − B A‖_F / ‖ΔW‖_F is reported (and the update's overall).
Changes to other tensors (embeddings, norms, biases) are not LoRA modules: they are reported with
their norm, not extracted. Defaults: none — the rank is the caller's choice (``--rank``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BadInput
from ..eval.model import linear_weights
from ..formats import base_key_lookup, write_peft_dir
from ..formats.hf_names import names_of
from ..formats.lora import PEFT_PREFIX
from ..formats.torch_io import TORCH_DTYPES, from_torch
from ..progress import ProgressFactory, no_progress
from ..store import TensorData
from ..store.view import RepoView
from .delta_specs import delta_specs
from .deltas import delta_loader


@dataclass
class Extracted:
    """What ``extract`` wrote and how close it is."""

    path: Path
    rank: int
    errors: dict[str, float] = field(default_factory=dict)
    """Per module (the loaded model's name): ‖ΔW − B A‖_F / ‖ΔW‖_F."""
    overall: float = 0.0
    """The same over every extracted module together."""
    skipped: dict[str, float] = field(default_factory=dict)
    """Changed tensors that are not linear layers' weights: their ‖Δ‖_F (left out)."""


def extract(repo: RepoView, rev: str, rank: int, out: Path, progress: ProgressFactory = no_progress) -> Extracted:
    """Write the rank-``rank`` LoRA adapter of ``rev``'s update on its base to ``out`` (a peft directory)."""
    if rank < 1:
        raise BadInput(f"--rank {rank}: a LoRA needs rank 1 or more")
    commit = repo.store.read_commit(repo.resolve(rev))
    if commit.base is None:
        raise BadInput(f"{rev} records no base checkpoint", "extract maps an update onto its base's layers: commit it with --base NAME")
    tree, base = repo.store.read_tree(commit.tree), repo.store.read_tree(commit.base)
    specs, load = delta_specs(tree, base), delta_loader(repo, tree, commit.base)
    lookup, names, linear = base_key_lookup(base), names_of(base), linear_weights(base)
    result, tensors, ranks = Extracted(Path(out), rank), {}, {}
    dropped = energy = 0.0
    advance = progress(f"extracting a rank-{rank} LoRA from {rev}", len(specs), "tensors")
    for key, (dtype, shape) in specs.items():
        delta = load(key).reshape(shape).double()
        checkpoint = lookup(key)
        if checkpoint in linear and len(shape) == 2:
            module = names.get(checkpoint, checkpoint).removesuffix(".weight")
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            r, sq = min(rank, s.numel()), s.square()
            ranks[module] = r
            like = TORCH_DTYPES[dtype]
            tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = from_torch(vh[:r].to(like).contiguous())
            tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = from_torch((u[:, :r] * s[:r]).to(like).contiguous())
            result.errors[module] = math.sqrt(float(sq[r:].sum() / sq.sum())) if float(sq.sum()) > 0 else 0.0
            dropped, energy = dropped + float(sq[r:].sum()), energy + float(sq.sum())
        elif bool(delta.ne(0).any()):
            result.skipped[key] = float(delta.norm())
        advance(1)
    if not tensors:
        raise BadInput(f"{rev} changes no linear layer of its base", "extract makes LoRA modules of linear layers' updates")
    result.overall = math.sqrt(dropped / energy) if energy > 0 else 0.0
    smaller = {re.escape(m): r for m, r in ranks.items() if r < rank}  # layers narrower than the rank: their own
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": sorted(result.errors), "bias": "none",
              "lora_dropout": 0.0, "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "rank_pattern": smaller,
              "alpha_pattern": dict(smaller), "modules_to_save": None, "init_lora_weights": True, "task_type": None,
              "base_model_name_or_path": repo.base_name(commit.base)}
    data: dict[str, TensorData] = tensors
    write_peft_dir(Path(out), config, data, lambda name: data[name].data)
    return result
