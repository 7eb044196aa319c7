"""Merge kernels: fused elementwise passes and exact magnitude selection.

The algorithms in ``dithub.algorithms.merge`` state what a method computes; the kernels
here compute the elementwise parts of it in one pass over memory.
"""
from . import native, philox
from .fused import COMPILE_MIN_NUMEL, fused
from .select import kth_largest_abs

__all__ = ["COMPILE_MIN_NUMEL", "fused", "kth_largest_abs", "native", "philox"]
