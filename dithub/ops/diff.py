"""Per-tensor and per-LoRA-module differences between two commits.

For each tensor: added / removed / changed / same, norms, the norm of the change and the cosine
similarity. For LoRA modules, the change of the update ΔW = s·B@A is measured exactly without
forming ΔW: its singular values come from a (2r x 2r) core, and its effective rank is exp(entropy
of the normalized singular values) (Roy & Vetterli, "The effective rank", 2007)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..formats.lora import lora_modules, scaling
from ..formats.numpy_io import to_float64
from ..store import ObjectId, TensorData, Tree


@dataclass(frozen=True)
class TensorDiff:
    name: str
    status: str  # added, removed, changed, same
    shape: tuple[int, ...]
    norm_a: float | None
    norm_b: float | None
    delta_norm: float
    cosine: float | None


@dataclass(frozen=True)
class ModuleDiff:
    module: str
    status: str
    delta_norm: float
    effective_rank: float
    rank: int


@dataclass
class DiffResult:
    a: ObjectId
    b: ObjectId
    kind_a: str
    kind_b: str
    tensors: list[TensorDiff] = field(default_factory=list)
    modules: list[ModuleDiff] = field(default_factory=list)

    @property
    def changed(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.status != "same"]


def effective_rank(singular_values: np.ndarray) -> float:
    """exp(H(p)) with p = σ / Σσ; 0 for a zero matrix."""
    s = singular_values[singular_values > 0]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def factored_singular_values(terms: Sequence[tuple[float, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Singular values of Σ s·B@A without forming it (QR of the stacked factors)."""
    left = np.concatenate([s * b for s, b, _ in terms], axis=1)
    right = np.concatenate([a for _, _, a in terms], axis=0)
    _, r1 = np.linalg.qr(left)
    _, r2 = np.linalg.qr(right.T)
    return np.asarray(np.linalg.svd(r1 @ r2.T, compute_uv=False))


def tensor_diff(name: str, a: TensorData | None, b: TensorData | None) -> TensorDiff:
    ta = to_float64(a).reshape(-1) if a is not None else None
    tb = to_float64(b).reshape(-1) if b is not None else None
    shape = (b or a).shape  # type: ignore[union-attr]
    na = float(np.linalg.norm(ta)) if ta is not None else None
    nb = float(np.linalg.norm(tb)) if tb is not None else None
    if ta is None or tb is None:
        return TensorDiff(name, "added" if ta is None else "removed", shape, na, nb, float(nb or na or 0.0), None)
    if ta.shape != tb.shape:
        return TensorDiff(name, "changed", shape, na, nb, float("nan"), None)
    cos = float(ta @ tb / (na * nb)) if na and nb else None
    return TensorDiff(name, "changed", shape, na, nb, float(np.linalg.norm(tb - ta)), cos)


def diff_trees(a_id: ObjectId, a: Tree, load_a: Callable[[str], TensorData], b_id: ObjectId, b: Tree,
               load_b: Callable[[str], TensorData]) -> DiffResult:
    """Compare two trees tensor by tensor (identical ids are not even loaded)."""
    result = DiffResult(a_id, b_id, a.kind, b.kind)
    for name in sorted(set(a.tensors) | set(b.tensors)):
        ea, eb = a.tensors.get(name), b.tensors.get(name)
        if ea is not None and eb is not None and ea.id == eb.id:
            result.tensors.append(TensorDiff(name, "same", ea.shape, None, None, 0.0, 1.0))
        else:
            result.tensors.append(tensor_diff(name, load_a(name) if ea else None, load_b(name) if eb else None))
    if "lora" in (a.kind, b.kind):
        result.modules = module_diffs(a, load_a, b, load_b)
    return result


def module_diffs(a: Tree, load_a: Callable, b: Tree, load_b: Callable, only: set[str] | None = None) -> list[ModuleDiff]:
    """The change of each LoRA module's ΔW from ``a`` to ``b`` (``only``: of these modules)."""
    ma = lora_modules(a.tensors) if a.kind == "lora" else {}
    mb = lora_modules(b.tensors) if b.kind == "lora" else {}
    out = []
    for module in sorted((set(ma) | set(mb)) & (only if only is not None else set(ma) | set(mb))):
        pa, pb = ma.get(module), mb.get(module)
        ids = lambda tree, m: (tree.tensors[m.a_key].id, tree.tensors[m.b_key].id, tree.config)  # noqa: E731
        if pa and pb and ids(a, pa) == ids(b, pb):
            continue
        terms = []
        if pb:
            terms.append((scaling(b.config, module), to_float64(load_b(pb.b_key)), to_float64(load_b(pb.a_key))))
        if pa:
            terms.append((-scaling(a.config, module), to_float64(load_a(pa.b_key)), to_float64(load_a(pa.a_key))))
        sv = factored_singular_values(terms)
        status = "changed" if pa and pb else ("added" if pb else "removed")
        tol = sv.max() * sv.size * np.finfo(np.float64).eps if sv.size else 0
        out.append(ModuleDiff(module, status, float(np.linalg.norm(sv)), effective_rank(sv), int((sv > tol).sum())))
    return out
