"""Checkpoint tensor names vs. the parameter names of the loaded model.

Recent ``transformers`` rename weights while loading (e.g. ViT's ``attention.attention.query``
becomes ``attention.q_proj``), and peft adapters are keyed by the loaded names. This asks
transformers itself, on a model built on the meta device (no memory, no weights), what each
checkpoint key becomes. Where transformers offers no such mapping, names are unchanged.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from ..store import Tree


def names_of(tree: Tree) -> dict[str, str]:
    """checkpoint key -> loaded parameter name for a stored base: as recorded at ``base add`` (no
    transformers needed), else computed (bases added before the names were recorded)."""
    if tree.names is not None:
        return {n: tree.names.get(n, n) for n in tree.tensors}
    return model_names(tree.config, tree.tensors)


def model_names(config: dict[str, Any], checkpoint_names: Iterable[str]) -> dict[str, str]:
    """checkpoint key -> loaded parameter name (identity when nothing is renamed)."""
    names = tuple(sorted(checkpoint_names))
    mapping = _mapping(json.dumps(config, sort_keys=True), names)
    return {n: mapping.get(n, n) for n in names}


@lru_cache(maxsize=16)
def _mapping(config_json: str, names: tuple[str, ...]) -> dict[str, str]:
    try:
        return _renamed(json.loads(config_json), names)
    except Exception:  # noqa: BLE001  an unknown architecture or an older transformers: keep the names
        return {}


def meta_model(config: dict[str, Any]) -> Any:
    """The transformers model of ``config`` (its ``architectures`` class, else AutoModel) built on the
    meta device: its modules and parameter names, no memory, no weights."""
    import torch
    import transformers

    arch = (config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch) if arch and hasattr(transformers, arch) else None
    cfg = transformers.AutoConfig.for_model(**config)
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        with torch.device("meta"):
            return cls(cfg) if cls else transformers.AutoModel.from_config(cfg)  # type: ignore[no-untyped-call]
    finally:
        transformers.logging.set_verbosity(previous)


def _renamed(config: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    model = meta_model(config)
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    meta = model.state_dict()
    out = {}
    for key in names:
        new, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, meta)
        if new not in meta and key in meta:
            new, pattern = key, None
        if pattern is None and new in meta:
            out[key] = new
    logging.getLogger(__name__).debug("renamed %d of %d checkpoint keys", sum(k != v for k, v in out.items()), len(names))
    return out
