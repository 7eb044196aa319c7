"""Scores of a model on a probe: accuracy, or a user's function named ``module:function``."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch

from ..errors import BadInput
from .entry import load_entry_point
from .probe import Probe

Metric = Callable[[torch.nn.Module, Probe], float]


@torch.no_grad()
def accuracy(model: torch.nn.Module, probe: Probe) -> float:
    """Top-1 accuracy of ``model``'s logits on the probe's labels."""
    key = getattr(model, "main_input_name", "input_ids")
    correct = 0
    for inputs, labels in probe.batches:
        logits = model(**{key: inputs}).logits
        correct += int((logits.argmax(-1) == labels).sum())
    return correct / max(1, probe.size)


def load_metric(spec: str, forbid: Iterable[str | os.PathLike[str]] = ()) -> Metric:
    """``accuracy``, or ``module:function`` taking (model, probe) and returning a float, higher better
    (never a module inside a folder of ``forbid``: see ``eval.entry``)."""
    if spec == "accuracy":
        return accuracy
    fn = load_entry_point(spec, "metric", forbid)

    def metric(model: torch.nn.Module, probe: Probe) -> float:
        value = fn(model, probe)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise BadInput(f"metric {spec!r} returned {value!r}, not a number") from None

    return metric
