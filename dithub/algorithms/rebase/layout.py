"""Where the attention heads and MLP neurons of a transformer checkpoint are (torch-free).

Permutation and rotation symmetries live inside each block: attention heads, the dimensions inside a
head (query/key together, value alone) and MLP neurons. This finds, per block, the checkpoint names
of the query, key, value and output projections and of the two MLP layers, for BERT- and ViT-style
encoders (``…layer.N.attention.{self|attention}.query``, ``…attention.output.dense``,
``…intermediate.dense``, ``…output.dense``) in their original checkpoint names.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import IncompatibleAdapters

_QUERY = re.compile(r"^(?P<block>(?:.*\.)?layer\.(?P<i>\d+)\.)attention\.(?P<attn>self|attention)\.query\.weight$")


@dataclass(frozen=True)
class Block:
    """One transformer block's linear layers, by checkpoint name (without ``.weight``)."""

    query: str
    key: str
    value: str
    out: str
    fc1: str
    fc2: str


@dataclass(frozen=True)
class Layout:
    blocks: list[Block]
    heads: int


def transformer_layout(names: Iterable[str], config: Mapping[str, Any], *, method: str, base: str) -> Layout:
    """The blocks of a BERT/ViT-style checkpoint; IncompatibleAdapters for other architectures."""
    names = set(names)
    blocks = []
    for name in sorted(names, key=lambda n: (len(n), n)):
        m = _QUERY.match(name)
        if not m:
            continue
        p, attn = m["block"], m["attn"]
        block = Block(f"{p}attention.{attn}.query", f"{p}attention.{attn}.key", f"{p}attention.{attn}.value",
                      f"{p}attention.output.dense", f"{p}intermediate.dense", f"{p}output.dense")
        missing = [f"{n}.weight" for n in vars(block).values() if f"{n}.weight" not in names]
        if missing:
            raise IncompatibleAdapters(f"base {base}: block {m['i']} has no {missing[0]!r}",
                                       f"{method} needs BERT/ViT-style blocks; naive and gradfix work on any architecture")
        blocks.append(block)
    heads = config.get("num_attention_heads")
    if not blocks or not isinstance(heads, int):
        arch = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
        raise IncompatibleAdapters(f"{method} cannot read the attention blocks of base {base} ({arch})",
                                   "it handles BERT/ViT-style encoders; naive and gradfix work on any architecture")
    return Layout(blocks, heads)
