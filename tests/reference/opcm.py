"""OPCM (sequential merging) as the authors' code computes it, on task-vector dictionaries, in float64.

Follows tanganke/fusion_bench, ``fusion_bench/method/opcm/opcm.py`` (``merge_linear_weights``: the
full SVD of the running merged task vector, split_rank = argmax(cumsum(s)/sum(s) > alpha), the new
task vector in those bases with its diagonal and top-left split_rank block zeroed and mapped back;
``merge_other_parameters``: the new task vector as it is; then the whole model rescaled so its task
vector's norm is the mean norm of the task vectors seen, λ_t the factor). ``linear(name)`` says
which tensors are linear layers' weights (the code asks ``isinstance(module, nn.Linear)``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def opcm(task_vectors: list[dict[str, Tensor]], alpha: float, linear: Callable[[str], bool]) -> dict[str, Tensor]:
    merged = {k: v.double() for k, v in task_vectors[0].items()}
    norms = [_norm(task_vectors[0])]
    previous_lambda = 1.0
    for tv in task_vectors[1:]:
        norms.append(_norm(tv))
        average = sum(norms) / len(norms)
        update = {}
        for name, prev in merged.items():
            task = tv[name].double()
            if linear(name):
                u, s, vh = torch.linalg.svd(prev, full_matrices=True)
                v = vh.T
                split = int((s.cumsum(dim=0) / s.sum() > alpha).float().argmax())
                projected = u.T @ task @ v
                projected.diagonal().fill_(0)
                projected[:split, :split] = 0
                task = u @ projected @ v.T
            update[name] = previous_lambda * prev + task
        size = _norm(update)
        previous_lambda = size / average
        merged = {k: v * (average / size) for k, v in update.items()}
    return merged


def _norm(tv: dict[str, Tensor]) -> float:
    return float(torch.sqrt(sum(v.double().square().sum() for v in tv.values())))
