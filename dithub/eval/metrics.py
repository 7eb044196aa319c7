"""Scores of a model on a probe."""
from __future__ import annotations

import torch

from .probe import Probe


@torch.no_grad()
def accuracy(model: torch.nn.Module, probe: Probe) -> float:
    """Top-1 accuracy of ``model``'s logits on the probe's labels."""
    key = getattr(model, "main_input_name", "input_ids")
    correct = 0
    for inputs, labels in probe.batches:
        logits = model(**{key: inputs}).logits
        correct += int((logits.argmax(-1) == labels).sum())
    return correct / max(1, probe.size)
