"""mergekit recipes: a merge written as mergekit's YAML (``merge --config``), and a merge commit
written back as one (``show --recipe``).

The schema read is mergekit's (``mergekit/config.py``): ``merge_method``, ``base_model``, ``models``
(each ``model`` with its ``parameters``), global ``parameters``, ``dtype``/``out_dtype``. A parameter
is a number, a gradient (a list interpolated across the layers: layer i of n at t = i / (n − 1);
tensors outside the layers at t = 0 before them — embeddings — and t = 1 after), or a list of
``{filter, value}`` conditions (the first whose filter is a substring of the tensor's name wins,
``*`` or no filter matching all). dithub evaluates every setting per tensor, as mergekit does, and
records what varies as per-tensor parameters (``MergePlan.per_tensor``), so replay stays exact.

Method and parameter names (``METHODS``; the table is docs/cli.md's too):

| mergekit | dithub | mapping |
|---|---|---|
| ``task_arithmetic`` | ``task_arithmetic`` | ``lambda`` (1) → ``alpha``; ``normalize: true`` divides by Σ weights |
| ``linear`` | ``task_arithmetic`` | the weighted mean Σ w θ / Σ w = θ_base + Σ w τ / Σ w (``normalize`` must stay true) |
| ``ties`` | ``ties``, ``convention: mergekit`` | ``density``; ``lambda`` → ``lam``; ``normalize`` must stay true (dithub's TIES averages) |
| ``dare_ties`` | ``dare``, ``combine: ties``, ``convention: mergekit`` | ``p`` = 1 − ``density``; needs ``normalize: true`` |
| ``dare_linear`` | ``dare``, ``combine: ta`` | ``p`` = 1 − ``density``; ``lambda`` → ``lam``; ``normalize: true`` divides by Σ weights |
| ``breadcrumbs`` | ``breadcrumbs``, ``convention: mergekit`` | ``density`` → ``beta``, ``gamma``; ``lambda`` → ``alpha`` |
| dithub's own names | the same | dithub's parameters, as ``-p`` takes them |

``weight`` (per model) becomes the merge's weights; ``int8_mask`` (a memory setting of mergekit's)
changes no result and is accepted; ``rescale: false`` (DARE without 1/(1−p)) is refused. Keys dithub
does not support — ``slices``, ``modules``, ``tokenizer_source``, ``tokenizer``, ``chat_template``, a
method or parameter it lacks — are refused with one line naming the key; none is ignored.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...algorithms.merge import REGISTRY, get_method
from ...errors import BadInput, IncompatibleAdapters
from ...formats import check_fits, import_adapter, import_model_dir, lora_modules
from ...progress import no_progress
from ...store import Commit, ObjectId, Op
from ...store.view import RepoView
from ..commit import named_model, store_staged
from ..identity import default_author
from .plan import plan_merge

MAX_RECIPE_BYTES = 1 << 20
TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype"}
REFUSED_TOP = {"slices": "merges of layer slices", "modules": "per-module merges", "tokenizer_source": "tokenizer merging",
               "tokenizer": "tokenizer merging", "chat_template": "chat templates"}
DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "fp32": "F32", "fp16": "F16", "bf16": "BF16"}
LAYER = re.compile(r"\.(?:layers|layer|h|blocks|block)\.(\d+)\.")
BEFORE = ("embed", "wte", "wpe", "patch_embeddings", "position_embeddings", "cls_token")


@dataclass(frozen=True)
class Translation:
    """How one mergekit method maps: dithub's method and the parameters that pin it to mergekit's
    definition, the dithub parameter ``lambda`` scales, mergekit's default ``normalize`` and the values
    of it dithub computes, and the parameters a model may give for itself."""

    method: str
    fixed: dict[str, Any]
    scale: str | None
    normalize: bool
    normalize_allowed: tuple[bool, ...]
    per_model: tuple[str, ...] = ("weight",)


METHODS: dict[str, Translation] = {
    "task_arithmetic": Translation("task_arithmetic", {}, "alpha", False, (False, True)),
    "linear": Translation("task_arithmetic", {}, None, True, (True,)),
    "ties": Translation("ties", {"convention": "mergekit"}, "lam", True, (True,), ("weight", "density")),
    "dare_ties": Translation("dare", {"combine": "ties", "convention": "mergekit"}, "lam", False, (True,), ("weight", "density")),
    "dare_linear": Translation("dare", {"combine": "ta"}, "lam", False, (False, True), ("weight", "density")),
    "breadcrumbs": Translation("breadcrumbs", {"convention": "mergekit"}, "alpha", False, (False, True), ("weight", "density", "gamma")),
}
"""mergekit's merge methods that dithub computes, by mergekit name."""


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe in ``path``: a YAML mapping, of a sane size (BadInput naming the file otherwise)."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such recipe file", "give a mergekit YAML file")
    if p.stat().st_size > MAX_RECIPE_BYTES:
        raise BadInput(f"{p}: {p.stat().st_size} bytes, larger than a recipe may be ({MAX_RECIPE_BYTES})")
    try:
        doc = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInput(f"{p}: not valid YAML ({str(exc).splitlines()[0]})", "fix the file") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{p}: a recipe is a YAML mapping (merge_method, models, …)")
    return doc


def layer_position(names: list[str]) -> Callable[[str], float]:
    """t of each tensor for gradients: layer i of n at i / (n − 1); before the layers 0, after 1."""
    layers = sorted({int(m.group(1)) for n in names if (m := LAYER.search(n))})
    index = {layer: i for i, layer in enumerate(layers)}

    def t(name: str) -> float:
        m = LAYER.search(name)
        if m is None:
            return 0.0 if any(b in name for b in BEFORE) else 1.0
        return index[int(m.group(1))] / (len(layers) - 1) if len(layers) > 1 else 1.0

    return t


def evaluate(setting: Any, name: str, t: float, where: str) -> Any:
    """A mergekit parameter setting's value for tensor ``name`` at layer position ``t`` (None: no
    condition matches), as mergekit's ``evaluate_setting``."""
    if isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, list) and setting and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    if isinstance(setting, list) and setting and all(isinstance(c, dict) for c in setting):
        for cond in setting:
            unknown = set(cond) - {"filter", "value"}
            if unknown or "value" not in cond:
                raise BadInput(f"{where}: a condition holds 'value' and optionally 'filter' (found {sorted(cond)})")
            flt = cond.get("filter")
            if flt is None or flt == "*" or (isinstance(flt, str) and flt in name):
                return evaluate(cond["value"], name, t, where)
        return None
    raise BadInput(f"{where}: {setting!r} is not a number, a gradient list or a list of {{filter, value}} conditions")


def _escape(name: str) -> str:
    """A tensor name as an fnmatch pattern matching it alone."""
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclass
class _Inputs:
    revs: list[str]
    settings: list[dict[str, Any]]


def _input(repo: RepoView, text: str, base_tree: ObjectId | None) -> str:
    """A model of the recipe as a revision: an existing path (committed here as an unreferenced commit
    on the recipe's base), else a dithub revision, else ``hf://org/name`` (as a path)."""
    named = named_model(repo, text, "recipe model", "name a branch or commit, a model or adapter directory, or hf://org/name")
    if named.commit is not None:
        if base_tree is not None and repo.store.read_commit(named.commit).base != base_tree:
            raise IncompatibleAdapters(f"recipe model {text!r} is not on the recipe's base_model",
                                       "rebase it onto that base first, or name its own base")
        return named.commit
    assert named.path is not None
    hub = named.hub
    staged = import_adapter(named.path, models=True)
    if base_tree is not None:
        check_fits(repo.store.read_tree(base_tree), staged)
    tree, _ = store_staged(repo, staged, no_progress)
    return repo.store.write_commit(Commit(tree, [], base_tree, default_author(), time.time(), f"recipe input {text}",
                                          Op(params=hub.to_json() if hub else {})))


def _base(repo: RepoView, text: Any) -> ObjectId | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise BadInput(f"recipe base_model {text!r} is not a name")
    named = named_model(repo, text, "recipe base_model", "name a base (see `dithub base list`), a model directory or hf://org/name")
    if named.commit is not None:
        return repo.store.read_commit(named.commit).tree
    assert named.path is not None
    tree, _ = store_staged(repo, import_model_dir(named.path), no_progress)
    return tree


def from_recipe(repo: RepoView, doc: Mapping[str, Any]) -> tuple[list[str], str, dict[str, Any]]:
    """(inputs as revisions, dithub method, its parameters — weights and per-tensor rules included)
    of a mergekit recipe; BadInput naming the first key dithub cannot honour."""
    for key in doc:
        if key in REFUSED_TOP:
            raise BadInput(f"recipe key {key!r} ({REFUSED_TOP[key]}) is not supported by dithub", "merge whole models: use 'models'")
        if key not in TOP_KEYS:
            raise BadInput(f"recipe key {key!r} is not supported by dithub", f"supported keys: {', '.join(sorted(TOP_KEYS))}")
    name = doc.get("merge_method")
    if not isinstance(name, str):
        raise BadInput("recipe key 'merge_method' is missing", f"one of: {', '.join(sorted(METHODS) + sorted(REGISTRY))}")
    mapping = METHODS.get(name) or (Translation(name, {}, None, False, (False,), ("weight",)) if name in REGISTRY else None)
    if mapping is None:
        raise BadInput(f"recipe merge_method {name!r} is not one dithub implements",
                       f"mergekit methods it maps: {', '.join(sorted(METHODS))}; or a dithub method: {', '.join(sorted(REGISTRY))}")
    native = name not in METHODS
    base_tree = _base(repo, doc.get("base_model"))
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        raise BadInput("recipe key 'models' must list the models to merge")
    inputs = _Inputs([], [])
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or set(entry) - {"model", "parameters"}:
            raise BadInput(f"recipe models[{i}] must be {{model: NAME, parameters: {{…}}}}")
        if doc.get("base_model") is not None and entry["model"] == doc["base_model"]:
            continue  # mergekit lists the base among the models; it is the origin of the task vectors here
        settings = entry.get("parameters") or {}
        if not isinstance(settings, dict):
            raise BadInput(f"recipe models[{i}].parameters must be a mapping")
        for key in settings:
            if key not in mapping.per_model:
                raise BadInput(f"recipe parameter {key!r} of model {entry['model']!r} is not supported by dithub for {name}",
                               f"per-model parameters here: {', '.join(mapping.per_model)}")
        inputs.revs.append(_input(repo, entry["model"], base_tree))
        inputs.settings.append(settings)
    globals_ = doc.get("parameters") or {}
    if not isinstance(globals_, dict):
        raise BadInput("recipe key 'parameters' must be a mapping")
    dtype = doc.get("out_dtype", doc.get("dtype"))
    params = _parameters(repo, name, mapping, native, inputs, dict(globals_))
    if dtype is not None:
        if str(dtype).lower() not in DTYPES:
            raise BadInput(f"recipe dtype {dtype!r} is not supported", f"one of: {', '.join(DTYPES)}")
        params["dtype"] = DTYPES[str(dtype).lower()]
    return inputs.revs, mapping.method, params


def _parameters(repo: RepoView, name: str, mapping: Translation, native: bool, inputs: _Inputs, settings: dict[str, Any]) -> dict[str, Any]:
    """dithub parameters for every tensor, and per-tensor rules where a setting varies."""
    normalize = settings.pop("normalize", mapping.normalize)
    settings.pop("int8_mask", None)
    if settings.pop("rescale", True) is not True:
        raise BadInput(f"recipe parameter 'rescale: false' of {name} is not supported by dithub", "DARE here always rescales by 1/(1−p)")
    if native:
        allowed = set(get_method(mapping.method).defaults)
    else:
        if normalize not in mapping.normalize_allowed:
            raise BadInput(f"recipe parameter 'normalize: {str(normalize).lower()}' of {name} is not supported by dithub",
                           f"dithub's {mapping.method} computes normalize: {str(not normalize).lower()}")
        allowed = ({"lambda"} if mapping.scale else set()) | set(mapping.per_model)
    for key in settings:
        if key not in allowed:
            raise BadInput(f"recipe parameter {key!r} is not supported by dithub for {name}",
                           f"supported: {', '.join(sorted(allowed | {'normalize', 'int8_mask'}))}")
    for key in set(mapping.per_model) & set(settings):  # given for every model: each model's unless it gives its own
        for s in inputs.settings:
            s.setdefault(key, settings[key])
        del settings[key]
    names = _tensor_names(repo, inputs.revs, mapping.method, mapping.fixed)
    position = layer_position(names)
    weights = _weights(inputs, names, position)
    per: dict[str, dict[str, Any]] = {}
    for n in names:
        t = position(n)
        values = {k: evaluate(v, n, t, f"recipe parameter {k!r}") for k, v in settings.items()}
        for key in set(mapping.per_model) - {"weight"}:
            got = {evaluate(s[key], n, t, f"recipe parameter {key!r}") for s in inputs.settings if key in s} - {None}
            if len(got) > 1:
                raise BadInput(f"recipe parameter {key!r} differs between models ({sorted(got)}) for {n}",
                               f"dithub's {mapping.method} takes one {key} for every input: give it once, under 'parameters'")
            if got:
                values[key] = got.pop()
        values = {k: v for k, v in values.items() if v is not None}
        per[n] = _dithub(mapping, native, values, weights, normalize)
    common = {k: Counter(repr(per[n].get(k)) for n in names).most_common(1)[0][0] for k in {k for v in per.values() for k in v}}
    base = {k: next(per[n][k] for n in names if repr(per[n].get(k)) == common[k]) for k in common}
    rules = [[_escape(n), diff] for n in names if (diff := {k: v for k, v in per[n].items() if repr(v) != common[k]})]
    out: dict[str, Any] = {**mapping.fixed, **base}
    if any(w != 1.0 for w in weights):
        out["weights"] = weights
    if rules:
        out["per_tensor"] = rules
    return out


def _tensor_names(repo: RepoView, revs: list[str], method: str, fixed: dict[str, Any]) -> list[str]:
    """The names per-tensor parameters match: the merge's output tensors, a LoRA module as NAME.weight."""
    plan = plan_merge(repo, revs, method, dict(fixed), min_inputs=1)
    if plan.kind != "lora":
        return sorted(plan.tensors)
    tree = repo.store.read_tree(repo.store.read_commit(plan.inputs[0]).tree)
    return sorted(m + ".weight" for m in lora_modules(tree.tensors))


def _weights(inputs: _Inputs, names: list[str], position: Callable[[str], float]) -> list[float]:
    out = []
    for rev, s in zip(inputs.revs, inputs.settings):
        if "weight" not in s:
            out.append(1.0)
            continue
        got = {evaluate(s["weight"], n, position(n), "recipe parameter 'weight'") for n in names}
        if len(got) != 1 or None in got:
            raise BadInput(f"recipe parameter 'weight' of {rev[:12]} varies across tensors",
                           "dithub weighs each input once: give one number")
        out.append(float(got.pop()))
    return out


def _dithub(mapping: Translation, native: bool, values: dict[str, Any], weights: list[float], normalize: bool) -> dict[str, Any]:
    """One tensor's mergekit values as dithub's parameters."""
    if native:
        return dict(values)
    averages = mapping.method == "ties" or mapping.fixed.get("combine") == "ties"  # TIES' disjoint mean is its normalize
    divide = sum(weights) if normalize and not averages else 1.0
    if divide == 0:
        raise BadInput("recipe weights sum to 0, and normalize divides by their sum")
    scale = float(values.get("lambda", 1.0)) / divide
    out: dict[str, Any] = {}
    if mapping.scale:
        out[mapping.scale] = scale
    elif mapping.method == "task_arithmetic":  # linear
        out["alpha"] = scale
    if "density" in values:
        if mapping.method == "dare":
            out["p"] = 1.0 - float(values["density"])
        elif mapping.method == "breadcrumbs":
            out["beta"] = float(values["density"])
        else:
            out["density"] = float(values["density"])
    if "gamma" in values:
        out["gamma"] = float(values["gamma"])
    return out


def _filter(glob: str) -> str:
    """A per-tensor glob as a mergekit filter (a substring): an exact name, or ``*TEXT*``."""
    plain = re.sub(r"\[([*?\[])\]", r"\1", glob)
    if not re.search(r"(?<!\[)[*?\[]", glob):
        return plain
    inner = glob[1:-1] if glob.startswith("*") and glob.endswith("*") and len(glob) > 2 else None
    if inner is None or re.search(r"[*?\[]", inner):
        raise BadInput(f"per-tensor pattern {glob!r} has no mergekit filter (a substring, or *TEXT*)")
    return inner


def _mergekit_name(method: str, params: dict[str, Any]) -> str | None:
    """The mergekit method computing what ``method`` with ``params`` computes, if any."""
    if method == "task_arithmetic":
        return "task_arithmetic"
    if method == "ties" and params.get("convention") == "mergekit":
        return "ties"
    if method == "dare" and params.get("convention") == "mergekit" and params.get("combine") == "ties":
        return "dare_ties"
    if method == "dare" and params.get("combine") == "ta":
        return "dare_linear"
    if method == "breadcrumbs" and params.get("convention") == "mergekit":
        return "breadcrumbs"
    return None


def _to_mergekit(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """dithub parameters of one tensor as mergekit's (the inverse of ``_dithub`` with normalize off,
    or on for TIES)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("alpha", "lam"):
            out["lambda"] = value
        elif key == "p":
            out["density"] = 1.0 - float(value)
        elif key == "beta":
            out["density"] = value
        elif key in ("density", "gamma"):
            out[key] = value
    return out


def to_recipe(repo: RepoView, oid: ObjectId, names: Callable[[ObjectId], str]) -> dict[str, Any]:
    """Merge commit ``oid`` as a recipe: mergekit's schema and names where mergekit computes the same
    (``METHODS``), else dithub's method and parameters (which only ``merge --config`` reads)."""
    from ..commit import base_reference

    commit = repo.store.read_commit(oid)
    if commit.op.name != "merge" or not commit.op.method:
        raise BadInput(f"{oid[:12]} is not a merge commit ({commit.op.name})", "show --recipe prints merges")
    params = dict(commit.op.params)
    if commit.op.method == "opcm":
        raise BadInput("opcm merges one input per commit: it has no recipe of all its inputs")
    weights = params.pop("weights", None) or [1.0] * len(commit.op.inputs)
    rules = params.pop("per_tensor", None) or []
    dtype = params.pop("dtype", None)
    for key in ("execution", "rank_error"):
        params.pop(key, None)
    if params.get("vectors") == "method":
        params.pop("vectors")
    name = _mergekit_name(commit.op.method, params)
    defaults = get_method(commit.op.method).defaults
    if name in ("dare_ties", "dare_linear") and any(params.get(k) != defaults[k] for k in ("seed", "mask", "rng")):
        name = None  # draws mergekit does not make: kept as dithub's parameters
    convert: Callable[[dict[str, Any]], dict[str, Any]]
    if name is None:
        doc: dict[str, Any] = {"merge_method": commit.op.method}
        convert = dict
        top = dict(params)
    else:
        doc = {"merge_method": name}
        convert = lambda v: _to_mergekit(name, v)  # noqa: E731
        top = {**convert(params), "normalize": name == "ties" or name == "dare_ties"}
        fixed = METHODS[name].fixed
        moot = ("convention",) if name == "dare_linear" else ()  # zero sums are TIES' election's alone
        extra = sorted(k for k in params if k not in fixed and k not in ("alpha", "lam", "p", "beta", "density", "gamma", "seed",
                                                                         "mask", "rng", *moot))
        if extra:
            raise BadInput(f"parameters {extra} of this merge have no mergekit equivalent")
    for glob, values in rules:  # prepended in turn: mergekit's first matching condition is dithub's last rule
        for key, value in convert(values).items():
            setting = top[key] if isinstance(top.get(key), list) else [{"value": top.get(key)}]
            top[key] = [{"filter": _filter(glob), "value": value}, *setting]
    if commit.base is not None:
        doc["base_model"] = base_reference(repo, commit.base)[0]
    doc["models"] = [{"model": names(i), "parameters": {"weight": float(w)}} for i, w in zip(commit.op.inputs, weights)]
    doc["parameters"] = top
    if dtype:
        doc["dtype"] = {v: k for k, v in DTYPES.items() if k.startswith(("float", "bfloat"))}[dtype]
    return doc
