"""dithub merge"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ...algorithms.merge import REGISTRY, get_method  # the declarations: no torch
from ...algorithms.params import finite
from ...errors import BadInput
from ..options import Alpha, Executor, Json, Metric, Sign, SigningKey, alpha_value, key_values, signing
from ..output import emit, human_bytes, out, progress_bars, short
from ..state import repo as open_repo

if TYPE_CHECKING:
    from ...repo import Repo

WEIGHT_HINT = "e.g. --weight task/a=0.5"


def split_weights(revs: list[str], pairs: list[str]) -> tuple[list[str], list[float] | None]:
    """The revisions without ``:W`` suffixes, and one weight per revision (``REV:W`` in the list or
    ``--weight REV=W``; 1 where none is given), or None where none is given at all. A ref name
    holds no ':' (git's rule), so a suffix after the last ':' is a weight."""
    names: list[str] = []
    weights: list[float | None] = []
    for rev in revs:
        name, sep, text = rev.rpartition(":")
        if sep and name:
            names.append(name)
            weights.append(finite(text, f"weight of {name}", WEIGHT_HINT))
        else:
            names.append(rev)
            weights.append(None)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise BadInput(f"--weight {pair!r} is not REV=W", WEIGHT_HINT)
        if name not in names:
            raise BadInput(f"--weight {pair} names no input", f"inputs: {', '.join(names)}")
        weights[names.index(name)] = finite(text, f"--weight {pair}", WEIGHT_HINT)
    if all(w is None for w in weights):
        return names, None
    return names, [1.0 if w is None else w for w in weights]


def per_tensor(params: dict[str, str]) -> tuple[dict[str, str], list[list]]:
    """``--param KEY=V`` for every tensor, and ``--param "KEY[GLOB]=V"`` for the tensors whose name
    matches GLOB (the last matching rule wins), as (params, rules)."""
    plain: dict[str, str] = {}
    rules: list[list] = []
    for key, value in params.items():
        name, bracket, glob = key.partition("[")
        if not bracket:
            plain[key] = value
        elif not glob.endswith("]") or not glob[:-1] or not name:
            raise BadInput(f"--param {key}={value}: a per-tensor parameter is NAME[GLOB]=VALUE", 'e.g. -p "density[*.mlp.*]=0.5"')
        else:
            rules.append([glob[:-1], {name: value}])
    return plain, rules


def scale_param(method: str, params: dict[str, str]) -> str:
    """The parameter ``--alpha`` sets for ``method`` with ``params`` (Core Space: its rule's scale)."""
    name = get_method(method).scale_for(params)
    if name is None:
        raise BadInput(f"method {method!r} has no final scale for --alpha", "pass its parameters with --param")
    return name


def _merge_recipe(repo: Repo, config: Path, into: str | None, message: str | None, device: str, as_json: bool) -> None:
    """``merge --config``: the merge a mergekit recipe describes."""
    with progress_bars() as progress:
        oid = repo.merge_recipe(config, into=into, message=message, progress=progress, device=device)
    emit(as_json, {"id": oid, "branch": into or repo.current_branch(), "op": repo.store.read_commit(oid).op.to_json()},
         lambda: out.print(f"Merged as {config} says: {short(oid)} on {into or repo.current_branch()}"))


def merge(
    ctx: typer.Context,
    revs: Annotated[list[str] | None, typer.Argument(help="Branches or commits to merge (two or more; opcm: added one by one).")] = None,
    method: Annotated[str | None, typer.Option("--method", help=f"Merge method: {', '.join(REGISTRY)}.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A mergekit recipe (YAML): its method, models and parameters.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="A method parameter, KEY=VALUE (repeatable).")] = None,
    weight: Annotated[list[str] | None, typer.Option("--weight", "-w", help="An input's weight, REV=W (repeatable; or REV:W in the list).")] = None,
    into: Annotated[str | None, typer.Option("--into", help="Branch to commit on (default: the current branch).")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
    alpha: Alpha = None,
    probe: Annotated[list[str] | None, typer.Option("--probe", help="Probe set for --alpha auto: a .safetensors file (inputs, labels) or module:function; for regmean and com the data the model runs on (one for all inputs, or one per input in order).")] = None,
    metric: Metric = "accuracy",
    defend: Annotated[str | None, typer.Option("--defend", help="A defence applied to the merge: ibvs (subtract an injected backdoor vector, arXiv 2510.08016).")] = None,
    defense_vector: Annotated[str | None, typer.Option("--defense-vector", help="The vector --defend ibvs subtracts: a task vector committed on the inputs' base.")] = None,
    defense_param: Annotated[list[str] | None, typer.Option("--defense-param", help="A parameter of the defence, KEY=VALUE (ibvs: scale, default 1).")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="Output dtype: F32, F16, BF16 or F64 (default: the inputs').")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    executor: Executor = "local",
    remote: Annotated[str | None, typer.Option("--remote", help="Run against this remote, the store of record: its branches in, --into its branch; then fetched.")] = None,
    sign: Sign = False,
    signing_key: SigningKey = None,
    as_json: Json = False,
) -> None:
    """Merge adapters into one new commit whose parents are the merged heads."""
    repo = open_repo(ctx)
    if config is not None:
        if revs or method or param or weight or alpha or dtype or dry_run:
            raise BadInput("--config gives the inputs, method and parameters", "drop the revisions and --method/-p/-w/--alpha/--dtype")
        return _merge_recipe(repo, config, into, message, device, as_json)
    if not revs or not method:
        raise BadInput("name the revisions to merge and --method (or give --config RECIPE)")
    plain, rules = per_tensor(key_values(param, "--param", "density=0.2"))
    params: dict[str, Any] = dict(plain)
    if rules:
        params["per_tensor"] = rules
    revs, weights = split_weights(revs, weight or [])
    if weights is not None:
        params["weights"] = weights
    if dtype:
        params["dtype"] = dtype.upper()
    defense = None
    if defend is not None:
        defense = {**key_values(defense_param, "--defense-param", "scale=0.5"), "method": defend, "vector": defense_vector}
    elif defense_vector or defense_param:
        raise BadInput("--defense-vector and --defense-param go with --defend", "e.g. --defend ibvs --defense-vector security/injected")
    probes = list(probe or [])
    activation = method in REGISTRY and get_method(method).space == "activation"
    if activation and alpha is not None:
        raise BadInput(f"{method} has no final scale for --alpha (it solves each layer)", "drop --alpha")
    if not activation and len(probes) > 1:
        raise BadInput("--probe is given more than once", "one probe set for --alpha auto (several only for regmean and com)")
    scale = alpha_value(alpha, None if activation else next(iter(probes), None), metric)
    if scale == "auto":
        scale_param(method, params)
    elif scale is not None:
        params[scale_param(method, params)] = scale
    if dry_run:
        plan = repo.plan_merge(revs, method, params)
        emit(as_json, plan, lambda: out.print(
            f"would merge {', '.join(plan.names)} with {plan.method} (arXiv {plan.paper}) {plan.params}: "
            f"{len(plan.tensors)} {plan.kind} tensors, peak memory about {human_bytes(plan.peak_bytes)}"))
        return
    with signing(repo, sign, signing_key), progress_bars() as progress:
        oid = repo.merge(revs, method, params, into=into, message=message, progress=progress,
                         probe=probes[0] if scale == "auto" else None, metric=metric, device=device, executor=executor, remote=remote,
                         probes=probes if activation else (), defense=defense)
    commit = repo.store.read_commit(oid)
    error = commit.op.params.get("rank_error")
    capped = (f" (rank {commit.op.params['rank']}: relative Frobenius error {error['overall']:.3g}, worst module "
              f"{error['max']:.3g})") if error else ""
    emit(as_json, {"id": oid, "branch": into or repo.current_branch(), "op": commit.op.to_json(), "parents": commit.parents},
         lambda: out.print(f"Merged {', '.join(revs)} with {method} as {short(oid)} on {into or repo.current_branch()}{capped}"))
