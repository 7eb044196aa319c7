"""Per-domain accuracy of the base, of each adapter and of each merge.

Normalized accuracy is the papers' measure: a merge's accuracy on a domain divided by that
domain's own fine-tuned adapter's, averaged over the domains.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dithub_demo.digits import task_split
from dithub_demo.train import evaluate

if TYPE_CHECKING:
    import torch

    from dithub.repo import Repo


@dataclass(frozen=True)
class Row:
    name: str
    accuracy: dict[str, float]
    """Per domain; a domain left out was not evaluated (an adapter is scored on its own domain)."""

    def mean(self) -> float:
        return sum(self.accuracy.values()) / max(1, len(self.accuracy))

    def normalized(self, reference: Mapping[str, float]) -> float:
        return sum(a / reference[d] for d, a in self.accuracy.items()) / max(1, len(self.accuracy))


def _model(repo: Repo, rev: str, scale: float) -> torch.nn.Module:
    """``rev``'s base model with ``scale`` times its adapter applied (a full tree: as stored)."""
    from dithub.errors import BadInput
    from dithub.eval import ScaledAdapter, load_base_model

    commit = repo.commit_object(rev)
    if commit.base is None:
        raise BadInput(f"{rev} records no base checkpoint to evaluate it on", "commit it with --base NAME")
    base = repo.store.read_tree(commit.base)
    tree = repo.store.read_tree(commit.tree)
    return load_base_model(repo, base) if tree.kind == "full" else ScaledAdapter(repo, base, tree).set_scale(scale)


def score(repo: Repo, rev: str, tasks: Sequence[str], scale: float = 1.0) -> dict[str, float]:
    """Accuracy on each task's test split (a domain, or a class task ``class/0-1``) of ``rev``'s
    adapter applied to its base, always 10-way."""
    model = _model(repo, rev, scale)
    splits = {t: task_split(t) for t in tasks}
    return {t: evaluate(model, split.x_test, split.y_test) for t, split in splits.items()}


def score_text(repo: Repo, rev: str, tasks: Sequence[str], scale: float = 1.0) -> dict[str, float]:
    """Accuracy on each text task's held-out sentences of ``rev``'s adapter on its MiniLM base."""
    from dithub_demo.text import SentenceClassifier, minilm_dir, text_split

    model = _model(repo, rev, scale)
    classifier = SentenceClassifier(minilm_dir())
    return {t: classifier.accuracy(model, t, text_split(t).test) for t in tasks}
