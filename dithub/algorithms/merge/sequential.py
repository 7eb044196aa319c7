"""Sequential merging: OPCM — Tang et al., "Merging Models on the Fly Without Retraining:
A Sequential Approach to Scalable Continual Model Merging", arXiv 2501.09522.

One task vector τ at a time joins a running merge τ̄ (state kept with the merge commit: the scale λ
and the norms of every task vector merged so far):

* linear layers' weights: with τ̄ = U S Vᵀ (full SVD) and k the first index where cumsum(S)/ΣS > α
  (α = 0.5), P = Uᵀ τ V with its diagonal and its top-left k x k block zeroed, τ' = U P Vᵀ — the
  part of τ that does not interfere with τ̄'s dominant directions; other tensors: τ' = τ. As the
  authors' code (tanganke/fusion_bench, ``fusion_bench/method/opcm/opcm.py``: ``merge_linear_weights``
  for ``nn.Linear`` modules, ``merge_other_parameters`` for the rest), ``project='modules'``
  (default) projects the weights of the base model's ``nn.Linear`` modules only (an embedding table
  is 2-D too), read from the recorded base's model class, whatever names the input uses (a LoRA
  adapter's modules are named as the loaded model names them, a task vector's tensors as the
  checkpoint does); without a recorded base it cannot tell them apart and projects every 2-D
  tensor, which ``project='matrices'`` always does (merges recorded before the parameter replay
  with it). ``project='linear'`` is what releases before ``modules`` computed, kept so their merges
  replay: names compared as given, so a LoRA adapter whose module names differ from the
  checkpoint's (every transformers model that renames its weights on load) was not projected.
* every tensor: u = λ τ̄ + τ'; then the whole model is rescaled so that its norm is the mean norm
  of the task vectors seen: λ_new = ‖u‖ / mean‖τ_i‖ and τ̄_new = u / λ_new.

The first model starts the merge as itself (λ = 1). Memory does not grow with the number merged.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .registry import implements


def opcm_project(previous: Tensor, task: Tensor, alpha: float, linear: bool = True) -> Tensor:
    """τ' for one tensor: the task update with τ̄'s dominant subspace (and diagonal) removed, for a
    linear layer's weight (``linear``, and 2-D); other tensors as they are."""
    if previous.dim() != 2 or not linear:
        return task
    u, s, vh = torch.linalg.svd(previous.double(), full_matrices=True)
    total = s.sum()
    k = int((s.cumsum(0) / total > alpha).float().argmax()) if total > 0 else 0
    p = u.T @ task.double() @ vh.T
    p.diagonal().zero_()
    p[:k, :k] = 0
    return (u @ p @ vh).to(task.dtype)


@implements("opcm")
def opcm_accumulate(previous: Tensor, task: Tensor, lam: float, linear_layer: bool | None = None, *, alpha: float,
                    project: str) -> Tensor:
    """u = λ τ̄ + τ' for one tensor (before the model-wide rescaling). ``linear_layer``: whether the
    base model holds this tensor as an ``nn.Linear`` weight (None: no base to tell); ``project``
    says whether that matters (``modules``, ``linear``) or every 2-D tensor is projected (``matrices``)."""
    linear = project == "matrices" or linear_layer is None or linear_layer
    return lam * previous + opcm_project(previous, task, alpha, linear)
