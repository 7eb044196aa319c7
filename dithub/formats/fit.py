"""Which base tensor each adapter tensor changes, and whether the shapes fit. Torch-free: used by
``commit --base`` to refuse an adapter trained on another checkpoint before anything is written."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import IncompatibleAdapters
from ..store import Tree
from .hf_names import names_of
from .lora import LoraModule, lora_modules, match_base_key
from .peft_kinds import PeftModule, peft_modules, peft_type, update_shape


class _Shaped(Protocol):
    @property
    def shape(self) -> tuple[int, ...]: ...


class AdapterLike(Protocol):
    """A stored ``Tree`` or a freshly imported ``Staged`` adapter."""

    @property
    def kind(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def tensors(self) -> Mapping[str, _Shaped]: ...


@dataclass(frozen=True)
class _Edit:
    kind: str  # "lora", "add", "replace" or "peft" (DoRA, LoHa, LoKr, IA3)
    key: str
    module: LoraModule | None = None
    peft: PeftModule | None = None
    bias: bool = False
    """An IA3 module's bias (it scales the bias with the output rows)."""


def base_key_lookup(base: Tree) -> Callable[[str], str | None]:
    """The checkpoint tensor of ``base`` an adapter key belongs to, or None (adapter keys may use the
    loaded model's names, as peft, or the checkpoint's own, as task vectors; see ``hf_names``)."""
    to_checkpoint = {m: c for c, m in names_of(base).items()}
    to_checkpoint.update({c: c for c in base.tensors})

    def lookup(key: str) -> str | None:
        hit = match_base_key(key, to_checkpoint)
        return to_checkpoint[hit] if hit is not None else None

    return lookup


def plan_edits(base: Tree, adapter: AdapterLike) -> dict[str, _Edit]:
    """Map each base tensor (by checkpoint name) to the adapter tensor(s) that change it; refuse strays."""
    lookup = base_key_lookup(base)
    edits: dict[str, _Edit] = {}

    def claim(base_key: str | None, edit: _Edit) -> None:
        if base_key is None:
            raise IncompatibleAdapters(f"adapter tensor {edit.key!r} has no matching tensor in the base checkpoint",
                                       "is the adapter built on this base? check --base / --merge-into")
        edits[base_key] = edit

    if adapter.kind == "lora":
        modules = lora_modules(adapter.tensors)
        factor_keys = {k for m in modules.values() for k in (m.a_key, m.b_key)}
        for m in modules.values():
            claim(lookup(m.name + ".weight"), _Edit("lora", m.a_key, m))
        for key in adapter.tensors:
            if key not in factor_keys:
                claim(lookup(key), _Edit("replace", key))
    elif adapter.kind == "peft":
        for pm in peft_modules(adapter.config, adapter.tensors).values():
            claim(lookup(pm.name + ".weight"), _Edit("peft", next(iter(pm.keys.values())), peft=pm))
            scales_rows = "ia3_l" in pm.keys and tuple(adapter.tensors[pm.keys["ia3_l"]].shape)[1:] == (1,)
            if scales_rows and (bias := lookup(pm.name + ".bias")) is not None:
                edits[bias] = _Edit("peft", pm.keys["ia3_l"], peft=pm, bias=True)
    else:
        for key in adapter.tensors:
            claim(lookup(key), _Edit("add", key))
    return edits


def check_fits(base: Tree, adapter: AdapterLike) -> None:
    """Raise IncompatibleAdapters unless every adapter tensor fits its base tensor's shape."""
    for base_key, edit in plan_edits(base, adapter).items():
        want = base.tensors[base_key].shape
        if edit.kind == "lora":
            assert edit.module is not None
            a = adapter.tensors[edit.module.a_key].shape
            b = adapter.tensors[edit.module.b_key].shape
            got: tuple[int, ...] = (b[0], a[1])
            if edit.module.embedding or adapter.config.get("fan_in_fan_out"):
                got = (a[1], b[0])
        elif edit.kind == "peft" and edit.bias:
            got = tuple(want)  # scaled entry by entry by the vector whose shape the weight's check saw
        elif edit.kind == "peft":
            assert edit.peft is not None
            got = update_shape(peft_type(adapter.config), edit.peft, {k: adapter.tensors[k].shape for k in edit.peft.keys.values()})
            got = tuple(w if g == -1 else g for g, w in zip(got, want)) if len(want) == len(got) else got  # IA3 scales one side
        else:
            got = adapter.tensors[edit.key].shape
        if tuple(got) != tuple(want):
            raise IncompatibleAdapters(f"adapter tensor {edit.key!r} updates a {list(got)} weight but base tensor {base_key!r} is "
                                       f"{list(want)}", "the adapter was trained on another base checkpoint")
