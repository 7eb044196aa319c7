"""Merge algorithms: pure functions on tensors, registered by name with paper and defaults.

Registered so far: task_arithmetic, ties, dare, breadcrumbs, magmax (full space, per tensor);
tsv, iso_c, iso_cts (spectral, per 2-D tensor); concat, mean_ba, core_space, ema (LoRA-native).
opcm (sequential: one input per commit, its state kept with the merge). The kernels are ``dithub.kernels``.
"""
from . import full_space, lora_space, sequential, spectral  # noqa: F401  register the methods
from .primitives import dare_draws, dare_keep, kth_largest_abs, magnitude_threshold
from .registry import REGISTRY, MergeMethod, get_method, register

__all__ = ["REGISTRY", "MergeMethod", "get_method", "register", "dare_draws", "dare_keep", "kth_largest_abs", "magnitude_threshold"]
