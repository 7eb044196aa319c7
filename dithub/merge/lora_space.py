"""LoRA-native merges whose result is again a LoRA (no m x n matrix is formed).

Each input module is (A_t, B_t, s_t) with ΔW_t = s_t · B_t @ A_t (LoRA, arXiv 2106.09685);
the result (A, B) has scale 1 and rank Σ r_t (ranks may differ between inputs).

* ``concat`` — the exact linear merge: A = [α s_1 A_1; …; α s_T A_T], B = [B_1 … B_T], so
  B @ A = α Σ s_t B_t A_t (peft's ``add_weighted_adapter(combination_type="cat")``). Default α = 1.
* ``mean_ba`` — DitHub (Cazzato et al., arXiv 2503.09271): the mean of the selected class modules'
  products B_c A_c, i.e. ``concat`` with α = 1/T; exact, no parameters.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import BadInput
from .registry import register

Factors = tuple[Tensor, Tensor, float]


def _concat(factors: Sequence[Factors], weight: float) -> tuple[Tensor, Tensor]:
    if not factors:
        raise BadInput("a merge needs at least one input")
    a = torch.cat([weight * s * fa.float() for fa, _fb, s in factors], dim=0)
    b = torch.cat([fb.float() for _fa, fb, _s in factors], dim=1)
    return a, b


@register("concat", paper="2106.09685", defaults={"alpha": 1.0}, space="lora")
def concat(factors: Sequence[Factors], *, alpha: float) -> tuple[Tensor, Tensor]:
    return _concat(factors, alpha)


@register("mean_ba", paper="2503.09271", defaults={}, space="lora")
def mean_ba(factors: Sequence[Factors]) -> tuple[Tensor, Tensor]:
    return _concat(factors, 1.0 / len(factors))
