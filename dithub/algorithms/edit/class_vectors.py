"""Class Vectors — Kim and Do, "Exploring and Leveraging Class Vectors for Classifier Editing",
arXiv 2510.11268 (NeurIPS 2025; project page aidaslab.github.io/Class-Vector).

A class vector is the shift of one class's mean penultimate representation (what the classifier
head reads) between the pre-trained and the fine-tuned encoder, measured on a few samples of it:

    κ_c = E_{x ∈ S_c}[f(x; θ_ft)] − E_{x ∈ S_c}[f(x; θ_pre)].

The paper edits with it in two ways: *latent steering* at run time (latents the gate deems of class
c, by cosine similarity, moved along κ_c) and *weight mapping*, a light fine-tune of the final block
so that the encoder itself produces the steered latents. dithub records the second as a commit
(``revert REV --class C --probe FILE``: op ``class-edit``, its probe and parameters recorded): to
forget class c, each probe latent z whose cosine with the fine-tuned class-c centroid is at least
``gate`` is moved to z − alpha·κ_c (``steer``), every other one kept, and the final block (the last
transformer layer and the norms between it and the head) is fitted to those targets by mean squared
error (``train.final_block``), ``steps`` full-batch Adam steps at ``lr`` from seed ``seed``.

Defaults (dithub's; the paper's values could not be read here, its text past the abstract and
summaries being unavailable and no code found): alpha = 4 (past the pre-trained centroid, where the
fine-tuned head no longer reads class c), gate = 0.5, steps = 200, lr = 1e-3, seed = 0, chosen on
the demo's noisy-digits fine-tune, where they take digit 3 from 64% to 0% and keep the others within
4 points; over every class of two fine-tunes the forgotten class ends at 0–53% and the others lose
2–27 points (docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..params import NATURAL, Algorithm, Range, Registry

if TYPE_CHECKING:
    from torch import Tensor


def class_vector(finetuned: Tensor, pretrained: Tensor) -> Tensor:
    """κ_c from the latents (n, d) of one class's samples under each encoder."""
    return finetuned.mean(0) - pretrained.mean(0)


def steer(latents: Tensor, centroid: Tensor, kappa: Tensor, *, alpha: float, gate: float) -> Tensor:
    """Latents (n, d) with those whose cosine with ``centroid`` is at least ``gate`` moved by −alpha·κ."""
    import torch

    cos = torch.nn.functional.cosine_similarity(latents, centroid.unsqueeze(0), dim=-1)
    return latents - alpha * (cos >= gate).to(latents.dtype).unsqueeze(-1) * kappa


@dataclass(frozen=True)
class EditMethod(Algorithm):
    """An edit recorded as a commit (its function: the latent rule; the operation fits the weights)."""

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"needs-labels", "trains"})


REGISTRY: Registry[EditMethod] = Registry("edit")
REGISTRY.add(EditMethod("class_vectors", steer, "2510.11268",
                        defaults={"alpha": 4.0, "gate": 0.5, "steps": 200, "lr": 1e-3, "seed": 0},
                        ranges={"alpha": NATURAL, "gate": Range(-1.0, 1.0), "steps": Range(1, 100_000),
                                "lr": Range(0.0, 1.0, low_open=True), "seed": NATURAL}))
