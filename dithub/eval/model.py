"""A base checkpoint as a transformers model, with an adapter's update applied at any scale.

The expensive part (loading the base, expanding the adapter to ΔW per weight) is done once;
``set_scale(a)`` then writes W + a·ΔW into the model's parameters, so a sweep of the final scale
costs one parameter update and one evaluation per point.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from collections.abc import Sequence

import torch

from ..errors import IncompatibleAdapters
from ..formats import plan_edits, write_model_dir
from ..formats.hf_names import meta_model, names_of
from ..formats.merge_into import lora_delta
from ..formats.peft_merge import update as peft_update
from ..formats.torch_io import to_torch
from ..store import Tree
from ..store.view import RepoView


def load_base_model(repo: RepoView, base: Tree) -> torch.nn.Module:
    """The base's transformers class (from its stored config), weights from the store."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # a tiny model loads in milliseconds; no bars on stderr
    arch = (base.config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "base"
        write_model_dir(out, base.config, base.tensors, lambda n: repo.store.iter_tensor_bytes(base.tensors[n].id))
        model = (cls or transformers.AutoModel).from_pretrained(out)
    return model.eval()


def linear_weights(base: Tree) -> set[str]:
    """The checkpoint names of ``base``'s tensors that are the weights of ``nn.Linear`` modules, from
    its transformers class built on the meta device (no weights read); cached per base."""
    key = json.dumps(base.config, sort_keys=True) + "\0" + "\0".join(sorted(base.tensors))
    if key not in _LINEAR:
        modules = dict(meta_model(base.config).named_modules())
        names = names_of(base)
        _LINEAR[key] = {k for k, n in names.items()
                        if n.endswith(".weight") and isinstance(modules.get(n.rpartition(".")[0]), torch.nn.Linear)}
    return _LINEAR[key]


_LINEAR: dict[str, set[str]] = {}


class ScaledAdapter:
    """A base model with ``scale · ΔW`` of an adapter applied (prepare once, apply per scale)."""

    def __init__(self, repo: RepoView, base: Tree, adapter: Tree, model: torch.nn.Module | None = None) -> None:
        """``model``: the base already loaded (adapters on one base can share it; ``set_scale(0)``
        puts back the base weights an adapter changed)."""
        self.model = model if model is not None else load_base_model(repo, base)
        params = dict(self.model.named_parameters())
        names = names_of(base)
        load = lambda tree, key: to_torch(repo.store.read_tensor(tree.tensors[key].id))  # noqa: E731
        self._base: dict[str, torch.Tensor] = {}
        self._delta: dict[str, torch.Tensor] = {}
        for ckpt_key, edit in plan_edits(base, adapter).items():
            name = names.get(ckpt_key, ckpt_key)
            if name not in params:
                raise IncompatibleAdapters(f"base tensor {ckpt_key!r} is not a parameter of the loaded model ({name!r})")
            w = params[name].detach().clone().float()
            if edit.kind == "lora":
                assert edit.module is not None
                delta = lora_delta(adapter.config, edit.module, load(adapter, edit.module.a_key), load(adapter, edit.module.b_key))
            elif edit.kind == "peft":
                assert edit.peft is not None
                delta = peft_update(adapter.config, edit.peft, lambda key: load(adapter, key), w, edit.bias)
            elif edit.kind == "replace":
                delta = load(adapter, edit.key).float() - w
            else:
                delta = load(adapter, edit.key).float()
            self._base[name], self._delta[name] = w, delta.reshape(w.shape)
        self._params = params

    @torch.no_grad()
    def set_scale(self, scale: float, others: Sequence[tuple[ScaledAdapter, float]] = ()) -> torch.nn.Module:
        """Write W + scale·ΔW (+ s·ΔW_o for each (other adapter on the same base, s)) into the model."""
        names = set(self._base).union(*(set(o._base) for o, _ in others))
        for name in names:
            p = self._params[name]
            w = self._base[name] if name in self._base else next(o._base[name] for o, _ in others if name in o._base)
            total = w + scale * self._delta[name] if name in self._delta else w.clone()
            for other, s in others:
                if name in other._delta:
                    total += s * other._delta[name]
            p.copy_(total.to(p.dtype))
        return self.model
