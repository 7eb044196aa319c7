"""Scores of a model on a probe: accuracy, or a user's function named ``module:function``."""
from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from ..errors import BadInput
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


def load_metric(spec: str) -> Metric:
    """``accuracy``, or ``module:function`` taking (model, probe) and returning a float, higher better."""
    if spec == "accuracy":
        return accuracy
    module, _, name = spec.partition(":")
    if not module or not name:
        raise BadInput(f"metric {spec!r} is neither 'accuracy' nor module:function", "name a function on PYTHONPATH")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"metric {spec!r} cannot be loaded: {exc}", "give module:function on PYTHONPATH") from None
    if not callable(fn):
        raise BadInput(f"metric {spec!r} is not a function")

    def metric(model: torch.nn.Module, probe: Probe) -> float:
        value = fn(model, probe)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise BadInput(f"metric {spec!r} returned {value!r}, not a number") from None

    return metric
