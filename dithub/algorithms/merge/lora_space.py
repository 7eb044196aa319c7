"""LoRA-native merges whose result is again a LoRA (no m x n matrix is formed).

Each input module is (A_t, B_t, s_t) with ΔW_t = s_t · B_t @ A_t (LoRA, arXiv 2106.09685);
the result (A, B) has scale 1 and rank Σ r_t (ranks may differ between inputs).

* ``concat`` — the exact linear merge: A = [α s_1 A_1; …; α s_T A_T], B = [B_1 … B_T], so
  B @ A = α Σ s_t B_t A_t (peft's ``add_weighted_adapter(combination_type="cat")``). Default α = 1.
* ``mean_ba`` — DitHub (Cappellino et al., arXiv 2503.09271): the mean of the selected class modules'
  products B_c A_c, i.e. ``concat`` with α = 1/T; exact. Modules that share one B (DitHub's layout)
  give B · mean(s_c A_c), of rank r (``shared_b='merge'``, default; ``stack`` keeps rank Σ r).
* ``ema`` — DitHub's update of a module whose class reappears: B ← 0.3·B_old + 0.7·B_new (default
  β = 0.7), A = A_new (``a_rule='new'``); see ``ema``.
* ``core_space`` — LoRA Core Space, Panariello et al., arXiv 2509.17786: merge in the R x R core of
  the joint bases of the inputs (defaults: rule task_arithmetic with its own defaults, rank 0 = keep
  R = Σ r_t, seed 0 for random rules, linear 'concat', bases 'svd', the paper's); see ``core_space``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ...errors import BadInput
from .primitives import svd
from .registry import get_method, implements

"""The full-space methods Core Space can run on the cores (tests check these are the registered ones)."""

Factors = tuple[Tensor, Tensor, float]


class Capped(tuple):
    """(A, B) of a merge capped at a rank, with ``dropped`` and ``energy``: the squared Frobenius norm
    the cap removed from the merged ΔW and the merged ΔW's own (``error``: their ratio's root)."""

    dropped: float
    energy: float

    def __new__(cls, a: Tensor, b: Tensor, dropped: float, energy: float) -> Capped:
        pair = super().__new__(cls, (a, b))
        pair.dropped, pair.energy = dropped, energy
        return pair

    @property
    def error(self) -> float:
        """‖ΔW − B A‖_F / ‖ΔW‖_F."""
        return (self.dropped / self.energy) ** 0.5 if self.energy > 0 else 0.0


def truncated_core(core: Tensor, rank: int) -> tuple[Tensor, Tensor, float, float]:
    """The best rank-``rank`` factors (left: R x k with the singular values, right_t: R x k) of a core
    written in orthonormal bases, and the squared norms dropped and kept in all (Eckart–Young)."""
    p, sv, qh = svd(core)
    energy = sv.double().square()
    return p[:, :rank] * sv[:rank], qh[:rank].T, float(energy[rank:].sum()), float(energy.sum())


def cap_rank(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor] | Capped:
    """The best rank-``rank`` approximation of the LoRA B @ A (``Capped``), found from its factors:
    B = Q_B R_B and Aᵀ = Q_A R_A (thin QRs), the SVD of the small core R_B R_Aᵀ, and back; no m x n
    matrix is formed. Rank 0, or one at least A's rows, returns (A, B) unchanged."""
    if not rank or rank >= a.shape[0]:
        return a, b
    q_b, r_b = torch.linalg.qr(b)
    q_a, r_a = torch.linalg.qr(a.T)
    left, right_t, dropped, energy = truncated_core(r_b @ r_a.T, rank)
    return Capped(right_t.T @ q_a.T, q_b @ left, dropped, energy)


def _concat(factors: Sequence[Factors], weight: float, weights: Sequence[float] | None = None) -> tuple[Tensor, Tensor]:
    """A = [weight w_t s_t A_t], B = [B_t]: the LoRA of weight · Σ w_t s_t B_t A_t (w_t = 1 without ``weights``)."""
    if not factors:
        raise BadInput("a merge needs at least one input")
    each = list(weights) if weights is not None else [1.0] * len(factors)
    a = torch.cat([weight * w * s * fa.float() for (fa, _fb, s), w in zip(factors, each)], dim=0)  # w = 1: exact
    b = torch.cat([fb.float() for _fa, fb, _s in factors], dim=1)
    return a, b


@implements("concat")
def concat(factors: Sequence[Factors], *, alpha: float, rank: int, weights: list[float] | None) -> tuple[Tensor, Tensor]:
    return cap_rank(*_concat(factors, alpha, weights), rank)


@implements("mean_ba")
def mean_ba(factors: Sequence[Factors], *, shared_b: str, rank: int, weights: list[float] | None) -> tuple[Tensor, Tensor]:
    return cap_rank(*_mean_ba(factors, shared_b, weights), rank)


def _mean_ba(factors: Sequence[Factors], shared_b: str, weights: list[float] | None) -> tuple[Tensor, Tensor]:
    """The mean of the modules' products (with ``weights``, the weighted mean Σ w_c s_c B_c A_c / Σ w_c).
    Where every input has the same B (DitHub's layout: one B per layer shared by the classes) and
    ``shared_b='merge'`` (default), that is B · mean(s_c A_c), of rank r; otherwise (or
    ``shared_b='stack'``, as merges recorded before the parameter did) the stacked factors of rank Σ r."""
    each = list(weights) if weights is not None else [1.0] * len(factors)
    total = sum(each)
    if total == 0:
        raise BadInput("mean_ba: the weights sum to 0", "give weights whose sum is not 0")
    if shared_b == "merge" and len(factors) > 1 and all(torch.equal(fb, factors[0][1]) for _fa, fb, _s in factors[1:]):
        if weights is None:
            a = sum(s * fa.float() for fa, _fb, s in factors) / len(factors)
        else:
            a = sum(w * s * fa.float() for (fa, _fb, s), w in zip(factors, each)) / total
        return a, factors[0][1].float()  # type: ignore[return-value]
    if weights is None:
        return _concat(factors, 1.0 / len(factors))
    return _concat(factors, 1.0 / total, weights)


def core_bases(factors: Sequence[Factors]) -> tuple[Tensor, Tensor]:
    """Orthonormal bases of the stacked B's columns (m x R) and A's rows (n x R), R ≤ Σ r_t, from
    the QR factorizations of the stacks (``bases='explicit'``)."""
    b_stack, a_stack = _stacks(factors)
    u_ref, _ = torch.linalg.qr(b_stack)
    v_ref, _ = torch.linalg.qr(a_stack.T)
    return u_ref, v_ref


def svd_bases(factors: Sequence[Factors]) -> tuple[Tensor, Tensor]:
    """The paper's bases: the left singular vectors of [B_1 … B_T] and the right singular vectors of
    [A_1; …; A_T] (thin SVDs, formed), for stacks too close to rank deficiency for ``_SvdFrame``."""
    b_stack, a_stack = _stacks(factors, scaled=False)
    return svd(b_stack)[0], svd(a_stack)[2].T


def _scales(factors: Sequence[Factors]) -> Tensor:
    """s_t for each column of the B stack (row of the A stack)."""
    return torch.cat([torch.full((fb.shape[1],), float(s)) for _fa, fb, s in factors])


def _stacks(factors: Sequence[Factors], scaled: bool = True) -> tuple[Tensor, Tensor]:
    """[s_1 B_1 … s_T B_T] (m x R; without the s_t if not ``scaled``) and [A_1; …; A_T] (R x n), in fp32."""
    b_stack = torch.cat([fb for _fa, fb, _s in factors], dim=1).float()
    a_stack = torch.cat([fa for fa, _fb, _s in factors], dim=0).float()
    return (b_stack.mul_(_scales(factors)) if scaled else b_stack), a_stack


BASES_CONDITION = 1e-3
"""``bases='implicit'`` needs min |R_ii| ≥ this x max |R_ii| on both triangular factors; a stack
closer to rank deficient forms the bases (``explicit``), whose orthonormality does not depend on it."""

GRAM_CONDITION = 0.2
"""Triangular factors whose min |R_ii| is at least this x max |R_ii| (condition numbers of a few)
come from the Cholesky factor of the Gram matrix (one GEMM: 3x cheaper than Householder QR), whose
implicit basis B R⁻¹ is then as orthonormal as Householder's (~1e-6 in fp32; its error grows with
the square of the condition number, so worse-conditioned stacks take Householder's R)."""


def _triangular(x: Tensor) -> Tensor | None:
    """R (upper, positive diagonal) of x = Q R (x: rows ≥ columns), or None when x is near rank
    deficient. Cholesky of xᵀx when well conditioned, Householder QR otherwise; both give the R
    with a positive diagonal, which is unique, so the two agree up to rounding."""
    if x.shape[0] < x.shape[1]:
        return None
    low, info = torch.linalg.cholesky_ex(x.T @ x)
    if int(info) == 0:
        r = low.T
        diag = r.diagonal()
        if float(diag.min()) >= GRAM_CONDITION * float(diag.max()):
            return r
    r = torch.linalg.qr(x, mode="r").R
    r = r * torch.where(r.diagonal() < 0, -1.0, 1.0)[:, None]  # the R with a positive diagonal
    diag = r.diagonal()
    return r if float(diag.min()) >= BASES_CONDITION * float(diag.max()) > 0 else None


def _right_singular(x: Tensor) -> tuple[Tensor, Tensor] | None:
    """(σ, W) of x = P Σ Wᵀ, σ descending, or None where x has more columns than rows or is near rank
    deficient. From the eigendecomposition of the Gram xᵀx where x is well conditioned (σ_min ≥
    ``GRAM_CONDITION`` σ_max, where squaring the condition number costs no accuracy; 2x cheaper than
    an SVD), else from the SVD of x's triangular factor R (x = QR, so R has x's σ and W)."""
    if x.shape[0] < x.shape[1]:
        return None
    lam, w = torch.linalg.eigh(x.T @ x)
    if float(lam[0]) >= GRAM_CONDITION**2 * float(lam[-1]) > 0:
        return lam.flip(0).sqrt(), w.flip(1)
    r = _triangular(x)
    if r is None:
        return None
    _p, sv, wh = torch.linalg.svd(r)
    return (sv, wh.T) if float(sv[-1]) >= BASES_CONDITION * float(sv[0]) > 0 else None


class _CoreFrame:
    """The joint bases of T LoRA modules, U_ref = B_stack R_B⁻¹ and V_ref = A_stackᵀ R_A⁻¹ (the
    QR factorizations B_stack = U_ref R_B and A_stackᵀ = V_ref R_A), kept implicit: the cores are
    M_t = U_refᵀ s_t B_t A_t V_ref = R_B[:, t] R_A[:, t]ᵀ (the column blocks of input t), and mapping a
    core back multiplies the stacks by triangular solves. No m x R or n x R basis is formed, so
    the two R factors (see ``_triangular``) replace the QRs, and the N projections cost R x r x R."""

    def __init__(self, b_stack: Tensor, a_stack: Tensor, r_b: Tensor, r_a: Tensor) -> None:
        self.b_stack, self.a_stack, self.r_b, self.r_a = b_stack, a_stack, r_b, r_a

    @classmethod
    def of(cls, factors: Sequence[Factors]) -> _CoreFrame | None:
        """The frame, or None where a stack has more columns than rows or is near rank deficient."""
        b_stack, a_stack = _stacks(factors)
        r_b = _triangular(b_stack)
        r_a = _triangular(a_stack.T) if r_b is not None else None
        return None if r_b is None or r_a is None else cls(b_stack, a_stack, r_b, r_a)

    def _from_b(self, x: Tensor) -> Tensor:
        """Coordinates in the B stack's columns of U_ref x: R_B⁻¹ x."""
        return torch.linalg.solve_triangular(self.r_b, x, upper=True)

    def _from_a(self, x: Tensor) -> Tensor:
        """Coordinates in the A stack's rows of V_ref x: R_A⁻¹ x."""
        return torch.linalg.solve_triangular(self.r_a, x, upper=True)

    def cores(self, ranks: Sequence[int]) -> list[Tensor]:
        if len(set(ranks)) == 1:  # one batched product: [T, R, r] @ [T, r, R]
            width, r = self.r_b.shape[0], ranks[0]
            blocks_b = self.r_b.view(width, len(ranks), r).transpose(0, 1)
            blocks_a = self.r_a.view(self.r_a.shape[0], len(ranks), r).permute(1, 2, 0)
            return list(torch.bmm(blocks_b, blocks_a))
        out, start = [], 0
        for r in ranks:
            out.append(self.r_b[:, start:start + r] @ self.r_a[:, start:start + r].T)
            start += r
        return out

    def factors(self, core: Tensor) -> tuple[Tensor, Tensor]:
        """(A, B) of the LoRA U_ref · core · V_refᵀ at rank R: B = B_stack, A = K A_stack with
        K = R_B⁻¹ core R_A⁻ᵀ (R x R), so no m x R product is computed either."""
        k = self._from_a(self._from_b(core).T).T
        return k @ self.a_stack, self.b_stack

    def truncated(self, left: Tensor, right_t: Tensor) -> tuple[Tensor, Tensor]:
        """(A, B) of the LoRA U_ref · left · right_tᵀ · V_refᵀ (left, right_t: R x k)."""
        return self._from_a(right_t).T @ self.a_stack, self.b_stack @ self._from_b(left)


class _SvdFrame(_CoreFrame):
    """The paper's bases, U_ref (left singular vectors of B_stack = [B_1 … B_T]) and V_ref (right
    singular vectors of A_stack), found without forming them or decomposing a tall stack: with
    B_stack = P Σ_B W_Bᵀ, U_ref = P and U_refᵀ B_stack = Σ_B W_Bᵀ =: L_B, where Σ_B and W_B come from an
    R x R problem (``_right_singular``); likewise L_A. So the cores are M_t = s_t L_B[:, t] L_A[:, t]ᵀ, and
    U_ref x = B_stack W_B Σ_B⁻¹ x maps back. ``r_b``/``r_a`` hold s·L_B and L_A (the blocks
    ``cores`` multiplies); the stacks carry no scale (the cores do)."""

    def __init__(self, b_stack: Tensor, a_stack: Tensor, l_b: Tensor, l_a: Tensor, back_b: Tensor, back_a: Tensor) -> None:
        super().__init__(b_stack, a_stack, l_b, l_a)
        self.back_b, self.back_a = back_b, back_a

    @classmethod
    def of(cls, factors: Sequence[Factors]) -> _SvdFrame | None:
        """The frame, or None where a stack has more columns than rows or is near rank deficient."""
        b_stack, a_stack = _stacks(factors, scaled=False)
        parts = []
        for stack in (b_stack, a_stack.T):
            found = _right_singular(stack)
            if found is None:
                return None
            sv, w = found
            parts.append((sv[:, None] * w.T, w / sv))  # L = Σ Wᵀ, and W Σ⁻¹
        (l_b, back_b), (l_a, back_a) = parts
        return cls(b_stack, a_stack, l_b * _scales(factors), l_a, back_b, back_a)

    def _from_b(self, x: Tensor) -> Tensor:
        return self.back_b @ x

    def _from_a(self, x: Tensor) -> Tensor:
        return self.back_a @ x


ROTATION_EQUIVARIANT = ("task_arithmetic", "tsv", "iso_c", "iso_cts")
"""Core rules that commute with rotations of the cores (f(Pᵀ M_t Q) = Pᵀ f(M_t) Q for orthogonal P, Q):
their merge is the same in any orthonormal bases of the stacks, so ``bases='svd'`` runs them in the
triangular ones, which need no SVD. Entrywise rules (TIES, DARE, Breadcrumbs, MagMax) do not."""


@implements("core_space")
def core_space(factors: Sequence[Factors], *, rule: str, rank: int, seed: int, linear: str, bases: str,
               key: str, weights: list[float] | None, **rule_params: Any) -> tuple[Tensor, Tensor]:
    """LoRA Core Space merging (Panariello et al., arXiv 2509.17786).

    Project every ΔW_t = s_t B_t A_t onto the joint bases U_ref (from the stacked B's) and V_ref (from
    the stacked A's): M_t = (U_refᵀ s_t B_t)(A_t V_ref), an R x R core with R ≤ Σ r_t. Merge the cores
    with any full-space ``rule`` (default task_arithmetic; its parameters — ``density``, ``alpha``… — are
    passed through, ``seed`` being Core Space's own; ``--alpha`` sets the rule's scale), and map back:
    B = U_ref M, A = V_refᵀ (rank R), or with ``rank`` k > 0 the top-k SVD of M. No m x n matrix is
    ever formed; the projection is lossless (each ΔW_t lies in the span of the bases), so core-space
    task arithmetic equals full-space task arithmetic.

    ``bases='svd'`` (the default) are the paper's bases, as its code forms them
    (apanariello4/core-space-merging, ``task_merger.py``, ``get_core_matrices``): the left singular
    vectors of [B_1 … B_T] and the right singular vectors of [A_1; …; A_T]. An entrywise rule's result
    depends on the bases (a core's entries are coordinates in them); the signs the SVD picks do not
    matter, since these rules are odd in each entry. They come from the SVDs of the small triangular
    factors of the stacks, never formed (``_SvdFrame``); stacks near rank deficiency (a singular value
    under ``BASES_CONDITION`` of the largest) form them by thin SVDs of the stacks. Rules that commute
    with rotations (``ROTATION_EQUIVARIANT``) give the same merge in any orthonormal bases and run in
    the triangular ones.

    ``bases='implicit'`` and ``'explicit'`` are the QR bases of the stacks (B_stack = U_ref R_B,
    A_stackᵀ = V_ref R_A), another algorithm for entrywise rules (dithub's first, which merges recorded
    with them replay with): ``implicit`` never forms them, M_t = R_B[:, t] R_A[:, t]ᵀ and the output
    is B = B_stack, A = R_B⁻¹ M R_A⁻ᵀ A_stack (see ``_CoreFrame``), the same product as ``explicit``'s
    B = U_ref M, A = V_refᵀ; stacks near rank deficiency form them; ``explicit`` always does, as
    merges recorded before the parameter did.

    For the linear rule at full rank the bases cancel: U_ref Σ α M_t V_refᵀ = α Σ s_t B_t A_t, which
    is ``concat``'s product. ``linear='concat'`` (the default) then returns the stacked factors and
    skips the decompositions (same product, same rank Σ r_t when that is ≤ min(m, n); 3-10x faster on
    768-wide layers); ``linear='core'`` returns the core-space factors U_ref M and V_refᵀ, as merges
    recorded before the parameter did (they replay with it).
    """
    inner = get_method(rule)  # rule, linear and bases: checked against their choices by params()
    if not factors:
        raise BadInput("a merge needs at least one input")
    total = sum(fa.shape[0] for fa, _fb, _s in factors)
    m, n = factors[0][1].shape[0], factors[0][0].shape[1]
    if linear == "concat" and rule == "task_arithmetic" and (not rank or rank >= total) and total <= min(m, n):
        return _concat(factors, float(rule_params.get("alpha", inner.defaults["alpha"])), weights)
    if bases == "svd" and rule not in ROTATION_EQUIVARIANT:
        frame: _CoreFrame | None = _SvdFrame.of(factors)
    else:
        frame = _CoreFrame.of(factors) if bases in ("svd", "implicit") else None
    if frame is not None:
        cores = frame.cores([fa.shape[0] for fa, _fb, _s in factors])
    else:
        u_ref, v_ref = svd_bases(factors) if bases == "svd" else core_bases(factors)
        cores = [(u_ref.T @ (s * fb.float())) @ (fa.float() @ v_ref) for fa, fb, s in factors]
    extra: dict[str, Any] = {"weights": weights} if weights is not None else {}  # the inner rule's own check refuses them if it has none
    merged = inner(cores, key=key, seed=seed, **extra, **rule_params) if inner.random else inner(cores, **extra, **rule_params)
    if rank and rank < merged.shape[0]:
        left, right_t, dropped, energy = truncated_core(merged, rank)
        if frame is not None:
            return Capped(*frame.truncated(left, right_t), dropped, energy)
        return Capped(right_t.T @ v_ref.T, u_ref @ left, dropped, energy)
    return frame.factors(merged) if frame is not None else (v_ref.T, u_ref @ merged)


@implements("ema")
def ema(factors: Sequence[Factors], *, beta: float, a_rule: str) -> tuple[Tensor, Tensor]:
    """DitHub's update of a class module that reappears, as the DitHub code does it
    (chiara-cap/DitHub): the B shared by the classes is blended at the end of a task,
    B ← β·B_new + (1−β)·B_prev with β = 0.7 (``groundingdino/util/task_memory.py``, ``merge_B``);
    a class's A is blended (0.3·warm-up A + 0.7·its old A) only to start its training again
    (``groundingdino/models/GroundingDINO/modules/lora_pool.py``, ``enable_per_class``), so the
    trained A of the new module is kept (``a_rule='new'``, default). ``a_rule='blend'`` blends A
    as B (β·A_new + (1−β)·A_old), which merges recorded before the parameter did.

    Inputs are [old, new] (in that order), with equal ranks and scales; it is a blend of the
    factors, not of the products.
    """
    if len(factors) != 2:
        raise BadInput(f"ema blends exactly two inputs (old, new), got {len(factors)}")
    (a_old, b_old, s_old), (a_new, b_new, s_new) = factors
    if a_old.shape != a_new.shape or b_old.shape != b_new.shape:
        raise BadInput(f"ema needs equal ranks: {a_old.shape[0]} (old) vs {a_new.shape[0]} (new)")
    if abs(s_old - s_new) > 1e-12 * max(abs(s_old), abs(s_new)):
        raise BadInput(f"ema needs equal LoRA scales (alpha/r): {s_old} (old) vs {s_new} (new)")
    a = a_new.float().clone() if a_rule == "new" else beta * a_new.float() + (1 - beta) * a_old.float()
    b = beta * b_new.float() + (1 - beta) * b_old.float()
    return a, s_new * b
