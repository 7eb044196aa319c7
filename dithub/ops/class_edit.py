"""``dithub revert REV --class C --probe FILE``: forget one class of an adapter by its class vector
(``algorithms.edit.class_vectors``, arXiv 2510.11268), recorded as a new commit.

The adapter's model (base + update) and the base alone run on the probe; the class vector κ_C and
the fine-tuned class-C centroid come from the probe's samples of class C; every probe latent is
steered (those near the centroid moved by −alpha·κ_C) and the final block is fitted to the steered
latents (``train.fit_final_block``). The commit's tree is the edited model's update on the base (a
task vector: the adapter's update with the final block's new values), its op ``class-edit``
records the class and every parameter, its input the edited commit and its data the stored probe
(parents: the target branch's previous head, if any and not the edited commit, then the edited commit),
so ``replay_class_edit`` recomputes it and ``revert`` of the commit undoes it like any other.
"""
from __future__ import annotations

from typing import Any

import torch

from ..algorithms.edit import REGISTRY as EDITS
from ..algorithms.edit import class_vector
from ..errors import BadInput, IncompatibleAdapters
from ..eval import ScaledAdapter, linear_activations, linear_order, load_base_model
from ..formats.hf_names import names_of
from ..store import Commit, ObjectId, Op, Tree
from ..store.view import RepoView
from ..train import final_block, fit_final_block
from .branches import target_branch
from .commit import commit_tree
from .identity import default_author
from .deltas import put_tensor
from .probes import read_probe, store_probe

OP = "class-edit"


def class_edit(repo: RepoView, rev: str, cls: int, probe: str, params: dict[str, Any] | None = None, *,
               method: str = "class_vectors", branch: str | None = None, message: str | None = None,
               author: str | None = None) -> ObjectId:
    """Forget class ``cls`` of ``rev``'s adapter (measured on labelled ``probe``) as a new commit on
    ``branch`` (default: the current one)."""
    algo = EDITS.lookup(method)
    full = algo.params(params)
    branch = target_branch(repo, branch, "pass --into BRANCH")
    head = repo.refs.resolve("refs/heads/" + branch)
    oid = repo.resolve(rev)
    commit = repo.store.read_commit(oid)
    if commit.base is None:
        raise BadInput(f"{rev} records no base checkpoint: a class vector compares the fine-tuned encoder with it",
                       "commit the adapter with --base NAME")
    if int(cls) != cls or cls < 0:
        raise BadInput(f"--class {cls} is not a class index")
    probe_id = store_probe(repo, probe)
    if not repo.store.read_tree(probe_id).tensors.get("labels"):
        raise BadInput(f"{probe}: a class edit needs labels (which samples are of class {cls})", "give a probe with 'labels'")
    op = Op(OP, method, {"class": int(cls), **full}, [oid], [probe_id])
    tree = edited_tree(repo, commit, op)
    text = message or f"forget class {cls} of {rev} ({method}: its class vector, the final block refitted)"
    parents = ([head] if head and head != oid else []) + [oid]  # the branch's previous head, then the edited commit
    return commit_tree(repo, tree, text, branch=branch, parents=parents, base=commit.base, op=op,
                       author=author or default_author(), expected=head)


def replay_class_edit(repo: RepoView, commit: Commit) -> ObjectId:
    """Recompute a class-edit commit's tree from its op (the edited commit, the stored probe)."""
    if commit.op.name != OP:
        raise BadInput("not a class-edit commit")
    return edited_tree(repo, repo.store.read_commit(commit.op.inputs[0]), commit.op)


def edited_tree(repo: RepoView, commit: Commit, op: Op) -> ObjectId:
    """The edited model's update on ``commit``'s base, as ``op`` says (stored; no commit)."""
    algo = EDITS.lookup(op.method or "")
    params = {k: v for k, v in op.params.items() if k != "class"}
    cls = int(op.params["class"])
    probe = read_probe(repo, op.data[0])
    assert commit.base is not None
    base = repo.store.read_tree(commit.base)
    pre = load_base_model(repo, base).float()
    edited = ScaledAdapter(repo, base, repo.store.read_tree(commit.tree)).set_scale(1.0).float()
    inputs = torch.cat([x for x, _ in probe.batches])
    labels = torch.cat([y for _, y in probe.batches])
    if not bool((labels == cls).any()):
        raise BadInput(f"the probe has no sample of class {cls}", f"give labelled samples of class {cls}")
    head = _head(edited, probe)
    ft, before = (linear_activations(m, probe, {"head": head}, len(inputs))["head"][0] for m in (edited, pre))
    kappa = class_vector(ft[labels == cls], before[labels == cls])
    targets = algo.fn(ft, ft[labels == cls].mean(0), kappa, alpha=float(params["alpha"]), gate=float(params["gate"]))
    block = final_block(edited, head, inputs)
    fit_final_block(edited, head, block, inputs, targets, steps=int(params["steps"]), lr=float(params["lr"]),
                    seed=int(params["seed"]))
    return _update_tree(repo, base, pre, edited)


def _head(model: torch.nn.Module, probe: Any) -> str:
    """The classifier head: the last linear layer to run, which must map to the model's labels."""
    order = linear_order(model, probe)
    labels = getattr(getattr(model, "config", None), "num_labels", None)
    if not order or labels is None or model.get_submodule(order[-1]).out_features != labels:
        raise IncompatibleAdapters("the model's last layer is not a classifier head over its labels",
                                   "class vectors edit classifiers (a model with num_labels and a linear head)")
    return order[-1]


def _update_tree(repo: RepoView, base: Tree, pre: torch.nn.Module, edited: torch.nn.Module) -> ObjectId:
    """A task vector keyed by the base's checkpoint names: every parameter the edited model changes."""
    to_model = names_of(base)
    old, new = dict(pre.named_parameters()), dict(edited.named_parameters())
    entries = {}
    for key, name in sorted(to_model.items()):
        if name in new and not torch.equal(new[name], old[name]):
            entries[key] = put_tensor(repo, (new[name].detach() - old[name].detach()).contiguous())
    return repo.store.write_tree(Tree("task_vector", {}, entries))
