"""Probe sets and model evaluation, shared by merge --alpha auto, rebase, revert and verify."""
from .metrics import Metric, accuracy, load_metric
from .model import ScaledAdapter, load_base_model
from .probe import Probe, load_probe
from .scale import AUTO_GRID, best_scale
from .signals import input_grams, linear_activations, linear_order, majority_descent_signs

__all__ = ["AUTO_GRID", "best_scale", "accuracy", "load_metric", "Metric", "ScaledAdapter", "load_base_model", "Probe", "load_probe",
           "input_grams", "linear_activations", "linear_order", "majority_descent_signs"]
