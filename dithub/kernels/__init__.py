"""Merge kernels: fused elementwise passes and exact magnitude selection.

The algorithms in ``dithub.algorithms.merge`` state what a method computes; the kernels here compute
the elementwise parts of it in one pass over memory: ``clib`` (the C loops, on numpy arrays: no
torch), ``native`` (the same on torch tensors), ``fused`` (choosing them or torch.compile), ``rank``
and ``select`` (exact k-th largest magnitudes), ``philox``, and the GPU's (``device``, ``triton_merge``).
Importing this package imports nothing heavy: each module is imported by name.
"""

__all__: list[str] = []
