"""Option and argument aliases shared by the commands."""
from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Annotated, Any

import typer

from ..algorithms.params import scale_value
from ..errors import BadInput

Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Rev = Annotated[str, typer.Argument(help="A branch, tag, base, commit id (or prefix), with optional ~N / ^N.")]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing name.")]
Executor = Annotated[str, typer.Option("--executor", help="Where the work runs: local, ray (RAY_ADDRESS, or a local cluster) or ray=ADDRESS.")]
Card = Annotated[bool, typer.Option("--card", help="Write a generated model card (README.md) even where one was committed.")]
Alpha = Annotated[str | None, typer.Option("--alpha", help="The final scale of the update, or 'auto': the best on --probe by --metric.")]
Metric = Annotated[str, typer.Option("--metric", help="What --alpha auto maximizes: accuracy, or module:function(model, probe) -> float.")]
Sign = Annotated[bool, typer.Option("--sign", "-S", help="Sign the commits written with an SSH key (--signing-key, or `dithub config user.signingkey`).")]
SigningKey = Annotated[str | None, typer.Option("--signing-key", help="The private SSH key -S signs with (default: user.signingkey).")]


def signing(repo: Any, sign: bool, key: str | None) -> AbstractContextManager[None]:
    """``repo.signing(key)`` when asked to sign (``-S``, or a key given), else nothing."""
    return repo.signing(key) if sign or key else contextlib.nullcontext()


def alpha_value(alpha: str | None, probe: str | None, metric: str, *, probe_without_auto: bool = False) -> float | str | None:
    """``--alpha`` as every command reads it: None (not given), a finite number, or ``auto`` — which
    needs ``--probe``; ``--metric`` goes with ``auto`` only, and so does ``--probe`` unless the
    command measures on it anyway (``probe_without_auto``: rebase's gradfix and theseus)."""
    value = scale_value(alpha) if alpha is not None else None
    if value == "auto" and probe is None:
        raise BadInput("--alpha auto needs --probe FILE", "a .safetensors file with inputs and labels (or module:function)")
    if probe is not None and value != "auto" and not probe_without_auto:
        raise BadInput("--probe is used with --alpha auto")
    if metric != "accuracy" and value != "auto":
        raise BadInput("--metric is used with --alpha auto")
    return value


def key_values(pairs: list[str] | None, flag: str, example: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options as a dict (BadInput naming ``flag`` for one without a key)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{flag} {pair!r} is not KEY=VALUE", f"e.g. {flag} {example}")
        out[key.strip()] = value.strip()
    return out
