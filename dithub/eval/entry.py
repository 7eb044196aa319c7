"""Code named by data (``module:function``): the one place dithub imports it.

A probe or metric may be a Python entry point. Where the name comes from a file someone else can
change (a policy in a checked-out tree), the caller passes the folders code must not come from:
the module is located first (``importlib.util.find_spec`` on the top-level package runs no code)
and refused when its file lies inside one of them, so a pull request cannot add a module that the
gate then imports.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import BadInput


def _inside(path: str, roots: list[str]) -> str | None:
    real = os.path.realpath(path)
    return next((r for r in roots if os.path.commonpath([real, r]) == r), None)


def load_entry_point(spec: str, what: str, forbid: Iterable[str | os.PathLike[str]] = ()) -> Callable[..., Any]:
    """The callable ``module:function`` names; BadInput if it cannot be found, is not callable, or
    its top-level module lies inside a folder of ``forbid``."""
    module, _, name = spec.partition(":")
    hint = "give module:function of a package installed in this environment"
    if not module or not name:
        raise BadInput(f"{what} {spec!r} is not module:function", hint)
    roots = [os.path.realpath(r) for r in forbid]
    if roots:
        try:
            found = importlib.util.find_spec(module.partition(".")[0])
        except (ImportError, ValueError) as exc:
            raise BadInput(f"{what} entry point {spec!r} cannot be loaded: {exc}", hint) from None
        if found is None:
            raise BadInput(f"{what} entry point {spec!r} cannot be loaded: no module {module.partition('.')[0]!r}", hint)
        places = [found.origin] if found.origin and found.has_location else []
        places += list(found.submodule_search_locations or [])
        for place in places:
            root = _inside(place, roots)
            if root:
                raise BadInput(f"{what} entry point {spec!r} refused: module {module.partition('.')[0]!r} lies inside {root} "
                               f"({Path(place)}), where a checked-out tree can put code", "install it as a package instead")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"{what} entry point {spec!r} cannot be loaded: {exc}", hint) from None
    if not callable(fn):
        raise BadInput(f"{what} entry point {spec!r} is not callable", hint)
    return fn
