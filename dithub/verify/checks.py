"""The named checks of ``dithub verify``. Each takes the commit under test (``Target``) and returns
rows: a status (pass, fail or skip), the figure it measured, the threshold, and a detail that
names the object, tensor, task or ref behind a failure."""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import DithubError, IncompatibleAdapters
from ..formats import check_fits, check_lora
from ..formats.lora import rank_and_alpha
from ..formats.peft_kinds import check_peft
from ..formats.torch_io import to_torch
from ..store.history import is_ancestor
from ..eval import ScaledAdapter, load_base_model, load_metric, load_probe
from ..ops.maintenance import check_object, reachable
from ..formats.sshsig import allowed_signers
from ..ops.revert import merge_inputs
from ..ops.sign import check_commit
from ..progress import ProgressFactory, no_progress
from ..store import Commit, ObjectId, Tree
from .policy import Policy, Settings
from .updates import Updates, inner, norm
from ..store.view import RepoView

FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


@dataclass
class CheckResult:
    check: str
    status: str
    """pass, fail or skip"""
    figure: float | None = None
    threshold: float | None = None
    detail: str = ""


@dataclass
class Target:
    """The commit under verification and what the checks share."""

    repo: RepoView
    oid: ObjectId
    commit: Commit
    tree: Tree
    base: Tree | None
    branch: str | None
    settings: Settings
    policy: Policy
    against: list[str] | None = None
    progress: ProgressFactory = no_progress
    _updates: dict[ObjectId, Updates] = field(default_factory=dict)

    def updates(self, oid: ObjectId | None = None) -> Updates:
        """The updates of commit ``oid`` (default: the target), on that commit's own base."""
        oid = oid or self.oid
        if oid not in self._updates:
            commit = self.repo.store.read_commit(oid)
            base = self.repo.store.read_tree(commit.base) if commit.base and self.repo.store.contains(commit.base) else None
            self._updates[oid] = Updates(self.repo, self.repo.store.read_tree(commit.tree), base)
        return self._updates[oid]


def _row(check: str, bad: bool, figure: float | None, threshold: float | None, detail: str) -> CheckResult:
    return CheckResult(check, "fail" if bad else "pass", figure, threshold, detail)


def integrity(repo: RepoView, oid: ObjectId, progress: ProgressFactory = no_progress) -> list[CheckResult]:
    """Every object reachable from the commit (history, trees, tensors, base) re-hashes to its id."""
    seen, missing = reachable(repo.store, [oid])
    absent_base = {oid for oid, why in missing if why.endswith("(base)")}
    missing = [(o, why) for o, why in missing if o not in absent_base]
    present = [o for o in seen if repo.store.contains(o)]
    advance = progress("integrity: re-hashing objects", len(present), "objects")
    bad: list[str] = []
    for o in present:
        reason = check_object(repo.store, o)
        if reason:
            bad.append(f"object {o}: {reason}")
        advance(1)
    bad += [f"object {o} is missing ({why})" for o, why in missing]
    note = f"; base {next(iter(absent_base))[:12]} not fetched" if absent_base else ""
    return [_row("integrity", bool(bad), len(bad), 0, bad[0] if bad else f"{len(present)} objects re-hashed{note}")]


def structure(t: Target) -> list[CheckResult]:
    """Shapes and target modules fit the base; LoRA rank and alpha agree with the config; dtypes allowed."""
    problems: list[str] = []
    if t.base is not None:
        try:
            check_fits(t.base, t.tree)
        except IncompatibleAdapters as exc:
            problems.append(exc.message)
    if t.tree.kind == "lora":
        try:  # pairs, ranks against r / rank_pattern, target_modules
            modules = check_lora(t.tree.config, {k: e.shape for k, e in t.tree.tensors.items()}, f"commit {t.oid[:12]}")
            for module in modules:
                alpha = rank_and_alpha(t.tree.config, module)[1]
                if not math.isfinite(alpha) or alpha <= 0:
                    problems.append(f"LoRA module {module!r} has lora_alpha {alpha}; the scale alpha/r needs a positive number")
        except (DithubError, TypeError, ValueError) as exc:
            problems.append(getattr(exc, "message", str(exc)))
    elif t.tree.kind == "peft":
        try:  # DoRA, LoHa, LoKr, IA3: modules complete, target_modules
            check_peft(t.tree.config, {k: e.shape for k, e in t.tree.tensors.items()}, f"commit {t.oid[:12]}")
        except DithubError as exc:
            problems.append(exc.message)
    for key, entry in sorted(t.tree.tensors.items()):
        if entry.dtype not in t.settings.dtypes:
            problems.append(f"tensor {key!r} is {entry.dtype}; the policy allows {', '.join(t.settings.dtypes)}")
    where = f"against base {t.repo.base_name(t.commit.base)}" if t.base is not None else "no base to compare with"
    return [_row("structure", bool(problems), len(problems), 0,
                 problems[0] if problems else f"{len(t.tree.tensors)} tensors, {where}")]


def numeric(t: Target) -> list[CheckResult]:
    """No NaN or Inf; a merge's update of each tensor no larger than its inputs' (by the ratio set)."""
    nonfinite, first = 0, ""
    for key, entry in sorted(t.tree.tensors.items()):
        if entry.dtype in FLOAT_DTYPES:
            n = int((~torch.isfinite(to_torch(t.repo.store.read_tensor(entry.id)).float())).sum())
            if n and not first:
                first = f"tensor {key!r} has {n} NaN/Inf values"
            nonfinite += n
    rows = [_row("numeric.finite", nonfinite > 0, nonfinite, 0, first or f"{len(t.tree.tensors)} tensors finite")]
    rows.append(_norms(t) if nonfinite == 0 else CheckResult("numeric.norms", "skip", None, t.settings.max_norm_ratio,
                                                              "not finite: norms are meaningless"))
    return rows


def _merge_inputs(t: Target, oid: ObjectId | None = None) -> list[ObjectId]:
    """What merge ``oid`` (default: the target) combined; [] if it is not a merge."""
    return merge_inputs(t.repo, oid or t.oid)


def _norms(t: Target) -> CheckResult:
    limit = t.settings.max_norm_ratio
    inputs = _merge_inputs(t)
    if not inputs:
        return CheckResult("numeric.norms", "skip", None, limit, "not a merge: no inputs to compare with")
    if not all(t.repo.store.contains(i) for i in inputs):
        return CheckResult("numeric.norms", "skip", None, limit, "the merge's inputs are not in this repository")
    worst, where = 0.0, ""
    merged = t.updates()
    sources = [t.updates(i) for i in inputs]
    for key, u in merged.items():
        total = sum(norm(v) for s in sources if (v := s.get(key)) is not None)
        size = norm(u)
        ratio = size / total if total > 0 else (math.inf if size > 0 else 0.0)
        if ratio > worst:
            worst, where = ratio, merged.names.get(key, key)
    return _row("numeric.norms", worst > limit, worst, limit,
                f"{where}: merged update norm / sum of its {len(inputs)} inputs' norms" if where else "no updates")


def _evaluator(t: Target) -> Callable[[ObjectId, str], float]:
    """metric(commit, probe) on a base model loaded once, on first use; probes and scores cached."""
    assert t.base is not None
    forbid = t.policy.code_forbidden(t.repo.path)
    metric = load_metric(t.settings.metric, forbid)
    models: list[Any] = []
    probes: dict[str, Any] = {}
    scores: dict[tuple[ObjectId, str], float] = {}

    def score(oid: ObjectId, probe: str) -> float:
        if (oid, probe) not in scores:
            if probe not in probes:
                probes[probe] = load_probe(probe, forbid=forbid)
            if not models:
                models.append(load_base_model(t.repo, t.base))  # type: ignore[arg-type]
            tree = t.repo.store.read_tree(t.repo.store.read_commit(oid).tree)
            adapter = ScaledAdapter(t.repo, t.base, tree, model=models[0])  # type: ignore[arg-type]
            try:
                scores[(oid, probe)] = metric(adapter.set_scale(1.0), probes[probe])
            finally:
                adapter.set_scale(0.0)
        return scores[(oid, probe)]

    return score


def _input_branch(t: Target, oid: ObjectId) -> str | None:
    """The branch an input came from: one whose head it is, else one whose history holds it."""
    branches = {b: h for b, h in t.repo.branches().items() if b != t.branch}
    for b, head in sorted(branches.items()):
        if head == oid:
            return b
    for b, head in sorted(branches.items()):
        if not _merge_inputs(t, head) and is_ancestor(t.repo.store, oid, head):  # a task's branch, not another merge
            return b
    return None


def behaviour(t: Target) -> list[CheckResult]:
    """The metric on the policy's probe is at least the floor; no input's task drops more than the margin."""
    s = t.settings
    if t.base is None:
        why = ("the commit records no base checkpoint to evaluate on" if t.commit.base is None
               else "its base checkpoint is not in this repository (fetch --with-base)")
        return [CheckResult("behaviour.accuracy", "skip", None, s.min_accuracy, why),
                CheckResult("behaviour.drop", "skip", None, s.max_drop, why)]
    score = _evaluator(t)
    rows = []
    if s.probe is None:
        rows.append(CheckResult("behaviour.accuracy", "skip", None, s.min_accuracy, "no probe in the policy"))
    else:
        acc, where = score(t.oid, s.probe), f"{s.metric} on {s.probe.rsplit('/', 1)[-1]}"
        if s.min_accuracy is None:
            rows.append(CheckResult("behaviour.accuracy", "skip", acc, None, f"{where}; no min_accuracy set"))
        else:
            rows.append(_row("behaviour.accuracy", acc < s.min_accuracy, acc, s.min_accuracy, where))
    rows.append(_drops(t, score))
    return rows


def _drops(t: Target, score: Callable[[ObjectId, str], float]) -> CheckResult:
    margin = t.settings.max_drop
    inputs = _merge_inputs(t)
    if not inputs:
        return CheckResult("behaviour.drop", "skip", None, margin, "not a merge")
    if margin is None:
        return CheckResult("behaviour.drop", "skip", None, None, "no max_drop set")
    worst, where, measured = -math.inf, "", 0
    for oid in inputs:
        branch = _input_branch(t, oid)
        probe = t.policy.task_probe(branch) if branch else None
        if probe is None or not t.repo.store.contains(oid):
            continue
        drop = score(oid, probe) - score(t.oid, probe)
        measured += 1
        if drop > worst:
            worst, where = drop, f"task {branch} (input {oid[:12]}): {score(oid, probe):.4f} alone, {score(t.oid, probe):.4f} merged"
    if not measured:
        return CheckResult("behaviour.drop", "skip", None, margin, "no input's branch has a probe under [tasks]")
    return _row("behaviour.drop", worst > margin, worst, margin, f"largest drop, {where} ({measured} tasks)")


def security(t: Target) -> list[CheckResult]:
    """Cosine of the update with each known-bad update (refs matching ``known_bad``); the largest."""
    limit = t.settings.max_backdoor_cosine
    if t.tree.kind == "full" and t.commit.base is None:
        return [CheckResult("security.backdoor", "skip", None, limit, "a full checkpoint with no base: no update to screen")]
    patterns = t.against if t.against is not None else list(t.settings.known_bad)
    refs = sorted(r for r in t.repo.refs.names("refs/") if any(fnmatch.fnmatchcase(r, p) for p in patterns))
    if not refs:
        return [CheckResult("security.backdoor", "skip", None, limit,
                            f"no known-bad refs match {', '.join(patterns)} (tag one: dithub tag known-bad/NAME REV)")]
    mine = t.updates()
    worst, where = -math.inf, ""
    for ref in refs:
        oid = t.repo.refs.resolve(ref)
        oid = t.repo.store.peel(oid) if oid is not None and t.repo.store.contains(oid) else oid
        if oid is None or not t.repo.store.contains(oid):
            continue
        bad = t.updates(oid)
        shared = set(mine.keys()) & set(bad.keys())
        if not shared:
            continue
        dot = uu = vv = 0.0
        for key in set(mine.keys()) | set(bad.keys()):
            u, v = mine.get(key), bad.get(key)
            uu += inner(u, u) if u is not None else 0.0
            vv += inner(v, v) if v is not None else 0.0
            if u is not None and v is not None:
                dot += inner(u, v)
        cos = dot / math.sqrt(uu * vv) if uu > 0 and vv > 0 else 0.0
        if cos > worst:
            worst, where = cos, ref
    if where == "":
        return [CheckResult("security.backdoor", "skip", None, limit, "no known-bad update shares a tensor with this one")]
    return [_row("security.backdoor", worst > limit, worst, limit, f"cosine with {where} ({len(refs)} known-bad refs)")]


def signature(t: Target) -> list[CheckResult]:
    """The commit's SSH signature (issue 26): it verifies, by a key the allowed signers list, and a
    principal the branch's ``signers`` admit; required only with ``require_signed`` (a bad signature
    fails always: the commit or its signature changed)."""
    s = t.settings
    if t.commit.signature is None and not s.require_signed:
        return [CheckResult("signature", "skip", None, None, "unsigned (require_signed is off)")]
    check = check_commit(t.commit, allowed_signers(s.allowed_signers) if s.allowed_signers else None)
    if check.status == "good" and s.signers and not any(fnmatch.fnmatchcase(p, g) for p in check.principals for g in s.signers):
        return [_row("signature", True, None, None, f"signed by {', '.join(check.principals)}, who may not sign "
                                                     f"{t.branch or 'this commit'} (allowed: {', '.join(s.signers)})")]
    if check.status == "good":
        return [_row("signature", False, None, None, f"good signature by {', '.join(check.principals)}")]
    detail = {"unsigned": "unsigned, and require_signed is on", "bad": f"bad signature: {check.detail}",
              "untrusted": f"signed by an untrusted key ({check.detail}; set allowed_signers)"}[check.status]
    return [_row("signature", True, None, None, detail)]


CHECKS: dict[str, Callable[[Target], list[CheckResult]]] = {
    "integrity": lambda t: integrity(t.repo, t.oid, t.progress), "structure": structure, "numeric": numeric,
    "behaviour": behaviour, "security": security, "signature": signature,
}
ROWS = {"integrity": ("integrity",), "structure": ("structure",), "numeric": ("numeric.finite", "numeric.norms"),
        "behaviour": ("behaviour.accuracy", "behaviour.drop"), "security": ("security.backdoor",), "signature": ("signature",)}
"""The rows each check reports, in order (also what a skipped check lists)."""
