"""The verify policy (``dithub.toml``): which checks run, their thresholds per branch pattern, the
probe sets; validated key by key so a typo is one clear line, not a silently ignored setting. The
format, with an example of every table and key: docs/verify.md ("The policy file"). Relative paths
are relative to the policy file's folder."""
from __future__ import annotations

import fnmatch
import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CHECK_NAMES = ("integrity", "structure", "numeric", "behaviour", "security", "signature")


@dataclass(frozen=True)
class Settings:
    """The thresholds that apply to one ref."""

    checks: tuple[str, ...] = CHECK_NAMES
    dtypes: tuple[str, ...] = ("F32", "F16", "BF16")
    max_norm_ratio: float = 4.0
    """A merged update's norm over the sum of its inputs' norms, per tensor. TA with α ≤ 1 and TIES
    stay ≤ 1; DARE's 1/(1−p) rescale reaches about 3.2 at p = 0.9 on one input."""
    probe: str | None = None
    metric: str = "accuracy"
    min_accuracy: float | None = None
    max_drop: float | None = None
    known_bad: tuple[str, ...] = ("refs/tags/known-bad/*",)
    max_backdoor_cosine: float = 0.2
    require_signed: bool = False
    """Fail a commit without a good signature (issue 26); a bad signature fails whatever this says."""
    allowed_signers: str | None = None
    """The ssh-keygen allowed-signers file signatures are checked against (relative to the policy)."""
    signers: tuple[str, ...] = ()
    """The principals (globs) that may sign the branches this applies to (empty: any allowed signer),
    e.g. ``[branches."client/*"] signers = ["*@clients.example"]``."""


_TYPE_NAMES: dict[type, str] = {str: "string", list: "list", bool: "boolean (true or false)"}
_TYPES: dict[str, tuple[type, ...]] = {
    "checks": (list,), "dtypes": (list,), "max_norm_ratio": (int, float), "probe": (str,), "metric": (str,),
    "min_accuracy": (int, float), "max_drop": (int, float), "known_bad": (list,), "max_backdoor_cosine": (int, float),
    "require_signed": (bool,), "allowed_signers": (str,), "signers": (list,),
}
_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2")


@dataclass(frozen=True)
class Policy:
    defaults: Settings = field(default_factory=Settings)
    branches: tuple[tuple[str, dict[str, Any]], ...] = ()
    tasks: tuple[tuple[str, str], ...] = ()
    hook_refs: tuple[str, ...] = ("*",)
    source: str | None = None
    allow_code: bool = False
    """The person running verify opted in to the ``module:function`` entries this file names."""

    def code_forbidden(self, repo_path: Path | None) -> list[Path]:
        """Folders a probe or metric module named by this policy must not come from: the repository's
        tree, the policy's folder and the working directory (a checked-out tree in a hook or CI job)."""
        places = [repo_path, Path(self.source).parent if self.source else None, Path.cwd()]
        return [p for p in places if p is not None]

    def for_branch(self, branch: str | None) -> Settings:
        """The defaults, overridden by every ``[branches."PATTERN"]`` that matches, in file order."""
        settings = self.defaults
        for pattern, overrides in self.branches:
            if branch is not None and fnmatch.fnmatchcase(branch, pattern):
                settings = replace(settings, **overrides)
        return settings

    def task_probe(self, branch: str) -> str | None:
        """The probe of the task a branch holds (the first matching ``[tasks]`` pattern)."""
        for pattern, template in self.tasks:
            if fnmatch.fnmatchcase(branch, pattern):
                return template.replace("{branch}", branch).replace("{name}", branch.rsplit("/", 1)[-1])
        return None

    def hooks_cover(self, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in self.hook_refs)


def _fail(where: str, message: str) -> BadInput:
    return BadInput(f"{where}: {message}", "see docs/verify.md for the policy keys")


def _code(value: str, where: str, allow_code: bool) -> None:
    """A ``module:function`` in a policy file runs code: only with the user's opt-in."""
    if not allow_code:
        raise BadInput(f"{where}: {value!r} names Python code; a policy file may name code only when the person running "
                       "verify opts in", "pass --allow-code (verify, hooks install), or name a probe file instead")


def _settings(table: Any, where: str, folder: Path, allow_code: bool = False) -> dict[str, Any]:
    """Validated overrides from one table of the policy file."""
    if not isinstance(table, dict):
        raise _fail(where, "must be a table")
    valid = [f.name for f in fields(Settings)]
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{where}.{key}"
        if key not in valid:
            raise _fail(name, f"unknown key (valid: {', '.join(valid)})")
        if not isinstance(value, _TYPES[key]) or (isinstance(value, bool) and bool not in _TYPES[key]):
            want = "number" if float in _TYPES[key] else _TYPE_NAMES[_TYPES[key][0]]
            raise _fail(name, f"must be a {want}, got {type(value).__name__} {value!r}")
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise _fail(name, "must be a list of strings")
            allowed = {"checks": CHECK_NAMES, "dtypes": _DTYPES}.get(key)
            bad = [v for v in value if allowed and v not in allowed]
            if bad:
                raise _fail(name, f"unknown value {bad[0]!r} (valid: {', '.join(allowed or ())})")
            value = tuple(value)
        elif isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)):
            value = float(value)
            if not math.isfinite(value):
                raise _fail(name, f"{value} is not a finite number")
            if value < 0 or (key in ("min_accuracy", "max_drop", "max_backdoor_cosine") and value > 1):
                raise _fail(name, f"{value} is out of range ({'0 to 1' if key != 'max_norm_ratio' else '≥ 0'})")
        elif isinstance(value, str) and key == "allowed_signers":
            value = str(folder / value)
        elif isinstance(value, str) and key in ("probe", "metric") and value != "accuracy" and ":" not in value:
            value = str(folder / value)
        elif isinstance(value, str) and key in ("probe", "metric") and value != "accuracy":
            _code(value, name, allow_code)
        out[key] = value
    return out


def load_policy(path: str | Path | None, *, allow_code: bool = False) -> Policy:
    """Read and validate a policy file; None (no file) gives the built-in defaults. ``module:function``
    entries (code) are refused unless ``allow_code``."""
    if path is None:
        return Policy()
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such policy file", "create dithub.toml or pass --policy FILE") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}", "fix the syntax") from None
    folder = path.parent
    where = path.name
    unknown = [k for k in doc if k not in ("verify", "tasks", "branches", "hooks")]
    if unknown:
        raise _fail(f"{where}: {unknown[0]}", "unknown table (valid: verify, tasks, branches, hooks)")
    defaults = Settings(**_settings(doc.get("verify", {}), f"{where}: verify", folder, allow_code))
    branches = doc.get("branches", {})
    if not isinstance(branches, dict):
        raise _fail(f"{where}: branches", "must be a table of branch patterns")
    overrides = tuple((pattern, _settings(table, f"{where}: branches.{pattern!r}", folder, allow_code))
                      for pattern, table in branches.items())
    tasks = doc.get("tasks", {})
    if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
        raise _fail(f"{where}: tasks", "must map branch patterns to probe files (strings)")
    tasks_out = tuple((p, v if ":" in v and not (folder / v).exists() else str(folder / v)) for p, v in tasks.items())
    for pattern, value in tasks_out:
        if ":" in value and not Path(value).exists():
            _code(value, f"{where}: tasks.{pattern!r}", allow_code)
    hooks = doc.get("hooks", {})
    if not isinstance(hooks, dict):
        raise _fail(f"{where}: hooks", "must be a table")
    for key in hooks:
        if key != "refs":
            raise _fail(f"{where}: hooks.{key}", "unknown key (valid: refs)")
    refs = hooks.get("refs", ["*"])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise _fail(f"{where}: hooks.refs", f"must be a list of branch patterns, got {refs!r}")
    return Policy(defaults, overrides, tasks_out, tuple(refs), str(path), allow_code)
