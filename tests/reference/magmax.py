"""MagMax as the authors' code computes it.

Follows danielm1405/magmax, ``src/merging/task_vectors.py`` (``merge_max_abs``: per entry the
input of largest magnitude, a later input replacing on ``>=``, every tensor of the model) and
``merge_splitted.py`` (the merged vector applied with scaling coefficient 0.5).
"""
from __future__ import annotations

import torch
from torch import Tensor

SCALE = 0.5


def magmax(vectors: list[Tensor], scale: float = SCALE) -> Tensor:
    best = vectors[0]
    for current in vectors[1:]:
        best = torch.where(current.abs() >= best.abs(), current, best)
    return best * scale
