"""DitHub's operators as its code computes them (chiara-cap/DitHub).

``groundingdino/models/GroundingDINO/modules/lora_pool.py``, ``forward`` in eval mode: the classes'
updates B A (one B shared by the classes) averaged, times the LoRA scaling;
``groundingdino/util/task_memory.py``, ``merge_B``: B ← (1 − 0.7)·B_prev + 0.7·B_new.
"""
from __future__ import annotations

import torch
from torch import Tensor

LAMBDA_B = 0.7


def mean_of_classes(a_per_class: list[Tensor], b_shared: Tensor, scaling: float) -> Tensor:
    updates = torch.stack([b_shared.double() @ a.double() for a in a_per_class])
    return scaling * updates.mean(dim=0)


def merge_b(b_prev: Tensor, b_new: Tensor) -> Tensor:
    return (1 - LAMBDA_B) * b_prev.double() + LAMBDA_B * b_new.double()
