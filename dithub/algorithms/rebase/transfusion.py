"""TransFusion: re-basin of task vectors onto a new release of the base, data-free.

Rinaldi et al., "Update Your Transformer to the Latest Release: Re-Basin of Task Vectors",
ICML 2025, arXiv 2505.22697 (reference code: aimagelab/TransFusion). The old base is matched to
the new one by permutations that leave the old model's function unchanged, and the same
permutations are applied to the update, which then lives in the new base's coordinates:

1. attention heads, per block: the cost between old head h and new head g is the distance between
   the singular values of their query, key, value and output matrices (invariant to any order of
   the dimensions inside a head), solved by the Hungarian algorithm;
2. inside each matched pair of heads: the query/key dimensions (one permutation for both, which
   keeps every q·k) and the value dimensions (value rows with the output projection's columns),
   each by maximizing the summed inner products of the matched weights (biases included);
3. MLP neurons: the first layer's rows (and bias) with the second layer's columns.

The residual stream is not permuted (one permutation would have to be shared by every block, the
embeddings and every LayerNorm through the skip connections; releases of a base do not reorder
it), so the permutation groups of different blocks are independent and one pass is the fixed
point of the reference's iterate-until-no-improvement loop. Dense updates are permuted entry-wise;
a LoRA pair stays a LoRA pair (B's rows, A's columns). No parameters; needs BERT/ViT-style blocks
and equal widths.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .layout import Block, transformer_layout
from .registry import RebaseContext, Transport, register_rebase


def _assign(score: Tensor, maximize: bool) -> Tensor:
    """``idx`` with ``idx[j]`` = the old unit that new unit j takes (Hungarian assignment)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(score.double().cpu().numpy(), maximize=maximize)
    idx = torch.empty(len(cols), dtype=torch.long)
    idx[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return idx


def _with_bias(src: Mapping[str, Tensor], name: str) -> Tensor:
    """The weight's rows with the bias appended as one more column (when there is a bias)."""
    w = src[name + ".weight"].float()
    b = src.get(name + ".bias")
    return torch.cat([w, b.float()[:, None]], 1) if b is not None else w


def match_block(old: Mapping[str, Tensor], new: Mapping[str, Tensor], block: Block, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Permutations (query/key rows, value rows, MLP neurons) taking ``old``'s block to ``new``'s."""
    def per_head(src: Mapping[str, Tensor]) -> dict[str, Tensor]:
        q, k, v = (_with_bias(src, n) for n in (block.query, block.key, block.value))
        o = src[block.out + ".weight"].float()  # (D, H·d): columns per head
        d = q.shape[0] // heads
        return {"q": q.reshape(heads, d, -1), "k": k.reshape(heads, d, -1), "v": v.reshape(heads, d, -1),
                "o": o.reshape(o.shape[0], heads, d).permute(1, 2, 0)}  # (H, d, D)

    a, b = per_head(old), per_head(new)
    d = a["q"].shape[1]
    cost = torch.zeros(heads, heads, dtype=torch.float64)
    for m in ("q", "k", "v", "o"):
        sa, sb = torch.linalg.svdvals(a[m]).double(), torch.linalg.svdvals(b[m]).double()  # (H, d)
        cost += torch.cdist(sa, sb) ** 2
    head_of = _assign(cost, maximize=False)  # new head g <- old head head_of[g]
    qk, v = [], []
    for g in range(heads):
        h = int(head_of[g])
        qk.append(h * d + _assign(a["q"][h] @ b["q"][g].T + a["k"][h] @ b["k"][g].T, maximize=True))
        v.append(h * d + _assign(a["v"][h] @ b["v"][g].T + a["o"][h] @ b["o"][g].T, maximize=True))
    fc1_a, fc1_b = _with_bias(old, block.fc1), _with_bias(new, block.fc1)
    fc2_a, fc2_b = old[block.fc2 + ".weight"].float(), new[block.fc2 + ".weight"].float()
    mlp = _assign(fc1_a @ fc1_b.T + fc2_a.T @ fc2_b, maximize=True)
    return torch.cat(qk), torch.cat(v), mlp


class PermutationTransport(Transport):
    """Permutes the output rows and input columns of the layers a permutation touches."""

    def __init__(self, rows: dict[str, Tensor], cols: dict[str, Tensor]) -> None:
        self.rows, self.cols = rows, cols

    def dense(self, key: str, delta: Tensor) -> Tensor:
        module, _, leaf = key.rpartition(".")
        if module in self.rows and delta.dim() >= 1:
            delta = delta[self.rows[module]]
        if module in self.cols and leaf == "weight" and delta.dim() == 2:
            delta = delta[:, self.cols[module]]
        return delta

    def factors(self, key: str, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        module = key.rpartition(".")[0]
        if module in self.rows:
            b = b[self.rows[module]]
        if module in self.cols:
            a = a[:, self.cols[module]]
        return a, b


@register_rebase("transfusion", paper="2505.22697")
def transfusion(ctx: RebaseContext) -> Transport:
    """Permute the update by the head/dimension/neuron matching of the old base to the new."""
    layout = transformer_layout(ctx.old.keys(), ctx.config_old, method="transfusion", base=ctx.old_name)
    rows: dict[str, Tensor] = {}
    cols: dict[str, Tensor] = {}
    for block in layout.blocks:
        qk, v, mlp = match_block(ctx.old, ctx.new, block, layout.heads)
        rows[block.query] = rows[block.key] = qk
        rows[block.value] = cols[block.out] = v
        rows[block.fc1] = cols[block.fc2] = mlp
    return PermutationTransport(rows, cols)
