"""Theseus' per-layer maps as the authors' code computes them (activation mode).

Follows apanariello4/merge-and-rebase, ``src/merge_and_rebase/rebase/methods/theseus.py``:
``ActivationStore.get_covariance`` (uncentered: Σ x_old x_newᵀ over the probe rows, float64),
``_compute_procrustes_map_from_cov`` (T = U Vᵀ of its SVD), ``_transport_weight`` (T_outᵀ ΔW T_in)
and ``_transport_bias`` (δ T_out), with the input map from the layer's inputs and the output map
from its outputs, each fitted on its own.
"""
from __future__ import annotations

import torch
from torch import Tensor


def procrustes_map(old: Tensor, new: Tensor) -> Tensor:
    cov = old.double().T @ new.double()
    u, _, vh = torch.linalg.svd(cov, full_matrices=False)
    return u @ vh


def transport_weight(delta: Tensor, x_old: Tensor, x_new: Tensor, y_old: Tensor, y_new: Tensor) -> Tensor:
    t_in, t_out = procrustes_map(x_old, x_new), procrustes_map(y_old, y_new)
    return t_out.T @ delta.double() @ t_in


def transport_bias(delta: Tensor, y_old: Tensor, y_new: Tensor) -> Tensor:
    return delta.double() @ procrustes_map(y_old, y_new)
