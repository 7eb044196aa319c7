"""An adapter's update of each base tensor, and inner products between updates, without ever
forming an m x n matrix for a LoRA module: ⟨B₁A₁, B₂A₂⟩ = Σ (B₁ᵀB₂) ⊙ (A₁A₂ᵀ), ⟨BA, D⟩ = Σ A ⊙ (BᵀD).

Verify compares a merge with its inputs (norms) and with known-bad updates (cosines) this way,
one base tensor at a time.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..formats import LoraModule, lora_modules, plan_edits, scaling
from ..formats.peft_merge import update as peft_update
from ..formats.torch_io import to_torch
from ..store import Tree
from ..store.view import RepoView


@dataclass(frozen=True)
class Update:
    """ΔW of one base tensor: ``dense``, or ``left @ right`` (a LoRA module, scale folded into left)."""

    dense: Tensor | None = None
    left: Tensor | None = None
    right: Tensor | None = None


def inner(u: Update, v: Update) -> float:
    """Frobenius inner product ⟨ΔW_u, ΔW_v⟩, in float64."""
    if u.dense is not None and v.dense is not None:
        return float((u.dense.double().flatten() * v.dense.double().flatten()).sum())
    if u.dense is not None:
        u, v = v, u
    assert u.left is not None and u.right is not None
    if v.dense is not None:
        d = v.dense.double().reshape(u.left.shape[0], -1)
        return float((u.right.double() * (u.left.double().T @ d)).sum())
    assert v.left is not None and v.right is not None
    return float(((u.left.double().T @ v.left.double()) * (u.right.double() @ v.right.double().T)).sum())


def norm(u: Update) -> float:
    return math.sqrt(max(inner(u, u), 0.0))


class Updates:
    """The updates an adapter tree makes, keyed by base tensor, read one key at a time."""

    def __init__(self, repo: RepoView, tree: Tree, base: Tree | None) -> None:
        self.repo, self.tree, self.base = repo, tree, base
        load = lambda key: to_torch(repo.store.read_tensor(tree.tensors[key].id))  # noqa: E731
        self._get: dict[str, Callable[[], Update | None]] = {}
        self.names: dict[str, str] = {}
        """Base tensor -> the adapter's own name for what changes it (for messages)."""
        if tree.kind == "peft" and base is None:
            pass  # DoRA, LoHa, LoKr, IA3: their updates are computed on the base (none is known without one)
        elif base is not None:
            for base_key, edit in plan_edits(base, tree).items():
                self.names[base_key] = edit.module.name if edit.module is not None else edit.key
                if edit.kind == "lora":
                    assert edit.module is not None
                    self._get[base_key] = self._lora(edit.module, load)
                elif edit.kind == "replace" or tree.kind == "full" or edit.kind == "peft":
                    self._get[base_key] = self._minus_base(edit.key, base_key, load, edit)
                else:
                    self._get[base_key] = functools.partial(self._dense, load, edit.key)
        elif tree.kind == "lora":
            for m in lora_modules(tree.tensors).values():
                self._get[m.name + ".weight"] = self._lora(m, load)
        else:
            for key in tree.tensors:
                self._get[key] = functools.partial(self._dense, load, key)

    @staticmethod
    def _dense(load: Callable[[str], Tensor], key: str) -> Update:
        return Update(dense=load(key))

    def _lora(self, m: LoraModule, load: Callable[[str], Tensor]) -> Callable[[], Update]:
        def get() -> Update:
            a, b = load(m.a_key).float(), load(m.b_key).float() * scaling(self.tree.config, m.name)
            if m.embedding or self.tree.config.get("fan_in_fan_out"):
                return Update(left=a.T, right=b.T)
            return Update(left=b, right=a)

        return get

    def _minus_base(self, key: str, base_key: str, load: Callable[[str], Tensor], edit: Any) -> Callable[[], Update | None]:
        """The update of a tensor whole minus the base's (a DoRA/LoHa/LoKr/IA3 module's: as its merge applies it)."""
        def get() -> Update | None:
            assert self.base is not None
            entry = self.base.tensors[base_key]
            if not self.repo.store.contains(entry.id):
                return None  # the base was not fetched: this update cannot be formed
            w = to_torch(self.repo.store.read_tensor(entry.id))
            if edit.kind == "peft":
                return Update(dense=peft_update(self.tree.config, edit.peft, load, w, edit.bias))
            return Update(dense=load(key).float() - w.float())

        return get

    def keys(self) -> list[str]:
        return sorted(self._get)

    def get(self, key: str) -> Update | None:
        fn = self._get.get(key)
        return fn() if fn else None

    def items(self) -> Iterator[tuple[str, Update]]:
        for key in self.keys():
            u = self.get(key)
            if u is not None:
                yield key, u
