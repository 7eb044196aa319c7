"""``blame``: for each tensor of a commit (each LoRA module as one: its A, B and scale), the commit
that last changed it, walking first parents as ``git blame --first-parent`` does, with the size of
that change (‖Δ‖; for a module, of its ΔW = s·B@A, from ``diff``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..formats.lora import lora_modules, scaling
from ..store import ObjectId, Tree
from ..store.view import RepoView
from .diff import module_diffs, tensor_diff


@dataclass(frozen=True)
class BlameLine:
    name: str
    """A tensor's name, or a LoRA module's."""
    module: bool
    commit: ObjectId
    author: str
    time: float
    title: str
    status: str
    """``added`` (the parent had none) or ``changed``."""
    change: float
    """‖Δ‖ of that commit's change to it (for a module, of its ΔW)."""


def _units(tree: Tree) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """What blame attributes: each LoRA module (its factor keys), each other tensor on its own."""
    modules = lora_modules(tree.tensors) if tree.kind == "lora" else {}
    factors = {k for m in modules.values() for k in (m.a_key, m.b_key)}
    units: dict[str, tuple[bool, tuple[str, ...]]] = {name: (True, (m.a_key, m.b_key)) for name, m in modules.items()}
    units.update({n: (False, (n,)) for n in tree.tensors if n not in factors})
    return units


def _identity(tree: Tree | None, name: str, unit: tuple[bool, tuple[str, ...]]) -> Any:
    """What tells whether ``tree`` holds the unit as another tree does (None: it holds none)."""
    if tree is None or any(k not in tree.tensors for k in unit[1]):
        return None
    ids = tuple(tree.tensors[k].id for k in unit[1])
    return (ids, scaling(tree.config, name)) if unit[0] and tree.kind == "lora" else ids


def blame(repo: RepoView, rev: str) -> list[BlameLine]:
    """The commit that last changed each tensor (or module) of ``rev``'s tree, by name."""
    oid = repo.resolve(rev)
    units = _units(repo.store.read_tree(repo.store.read_commit(oid).tree))
    pending = dict(units)
    lines: list[BlameLine] = []
    load = lambda tree: lambda key: repo.store.read_tensor(tree.tensors[key].id)  # noqa: E731
    current: ObjectId | None = oid
    while pending and current is not None:
        commit = repo.store.read_commit(current)
        tree = repo.store.read_tree(commit.tree)
        parent_id = commit.parents[0] if commit.parents else None
        parent = repo.store.read_tree(repo.store.read_commit(parent_id).tree) if parent_id else None
        title = commit.message.splitlines()[0] if commit.message else ""
        for name, unit in sorted(pending.items()):
            before = _identity(parent, name, unit)
            if before == _identity(tree, name, unit):
                continue
            old = parent or Tree("lora", {}, {})
            if unit[0]:
                [diff] = module_diffs(old, load(old), tree, load(tree), only={name})
                change = diff.delta_norm
            else:
                change = tensor_diff(name, load(old)(name) if before is not None else None, load(tree)(name)).delta_norm
            lines.append(BlameLine(name, unit[0], current, commit.author, commit.time, title,
                                   "added" if before is None else "changed", change))
            del pending[name]
        current = parent_id
    return sorted(lines, key=lambda line: line.name)
