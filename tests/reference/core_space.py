"""LoRA Core Space merging as the authors' code computes it, in float64.

Follows apanariello4/core-space-merging, ``task_merger.py``: ``get_core_matrices`` (U_B_ref: the left
singular vectors of B_stack = [B_1 … B_T]; Vh_A_ref: the right singular vectors of A_stack =
[A_1; …; A_T]; M_t = U_B_refᵀ B_t A_t Vh_A_refᵀ, "the optimized version" the comments give) and the
``merge_space == 'core'`` branch of ``merge`` (merge the M_t with the rule, ΔW = U_B_ref M Vh_A_ref).
The code has no LoRA scale; here input t's scale s_t multiplies its core (s_t B_t A_t is its ΔW).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def core_space(factors: list[tuple[Tensor, Tensor, float]], rule: Callable[[list[Tensor]], Tensor]) -> Tensor:
    """ΔW of the Core Space merge of LoRA modules (A_t, B_t, s_t) by ``rule`` on the cores."""
    a_stack = torch.cat([a.double() for a, _b, _s in factors], dim=0)
    b_stack = torch.cat([b.double() for _a, b, _s in factors], dim=1)
    vh_a_ref = torch.linalg.svd(a_stack, full_matrices=False)[2]
    u_b_ref = torch.linalg.svd(b_stack, full_matrices=False)[0]
    cores = [s * (u_b_ref.T @ b.double() @ a.double() @ vh_a_ref.T) for a, b, s in factors]
    return u_b_ref @ rule(cores).double() @ vh_a_ref
