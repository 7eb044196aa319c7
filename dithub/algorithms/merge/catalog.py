"""Every merge method declared: its paper, defaults, ranges, choices, legacy values, what it needs,
and the module that implements it. Nothing here needs torch, so that checking a merge's parameters
and planning it (``merge --dry-run``) do not load it; a method's module (which does) is imported the
first time the method runs, and its ``implements`` decorator checks the function against this
declaration (``registry.implements``). The papers and what each default means: the modules' docstrings.
"""
from __future__ import annotations

from ..params import NATURAL, REAL, UNIT, Range
from .registry import declare

CONVENTIONS = ("paper", "mergekit", "round")
"""How a magnitude trim counts what it keeps (TIES, Breadcrumbs) and how TIES' election signs a zero
sum: ``paper`` as the TIES authors' code, ``mergekit`` as mergekit, ``round`` as dithub's first
release (what merges recorded before the parameter replay with); see ``rules.trim_rank``."""
CORE_RULES = ("task_arithmetic", "ties", "dare", "breadcrumbs", "magmax", "tsv", "iso_c", "iso_cts")
"""The full-space rules Core Space merging runs inside its core space."""

declare("task_arithmetic", "full_space", paper="2212.04089", defaults={"alpha": 0.3}, ranges={"alpha": REAL},
        weighted=True, device_kernel=True)
declare("ties", "full_space", paper="2306.01708", defaults={"density": 0.2, "lam": 1.0, "convention": "paper"},
        ranges={"density": Range(0.0, 1.0, low_open=True), "lam": REAL}, choices={"convention": CONVENTIONS},
        legacy={"convention": "round"},  # the device kernels elect + on a zero sum and trim at round(density·n)
        weighted=True, device_kernel=True)
declare("dare", "full_space", paper="2311.03099",
        defaults={"p": 0.9, "combine": "ta", "lam": 1.0, "seed": 0, "mask": "uint16", "rng": "philox", "convention": "paper"},
        legacy={"mask": "float32", "rng": "torch", "convention": "mergekit"},
        ranges={"p": Range(0.0, 1.0, high_open=True), "lam": REAL, "seed": NATURAL},
        choices={"combine": ("ta", "ties"), "mask": ("uint16", "float32"), "rng": ("torch", "philox"),
                 "convention": ("paper", "mergekit")},
        check=lambda p: ("rng=philox draws 16-bit uniforms: use mask=uint16, or mask=float32 with rng=torch"
                         if p["rng"] == "philox" and p["mask"] != "uint16" else None),
        random=True, weighted=True, device_kernel=True)
declare("breadcrumbs", "full_space", paper="2312.06795", defaults={"beta": 0.1, "gamma": 0.01, "alpha": 0.3, "convention": "paper"},
        ranges={"beta": Range(0.0, 1.0, low_open=True), "gamma": Range(0.0, 1.0, high_open=True), "alpha": REAL},
        choices={"convention": CONVENTIONS}, legacy={"convention": "round"},
        check=lambda p: f"need beta <= 1 - gamma (got beta={p['beta']}, gamma={p['gamma']})" if p["beta"] > 1 - p["gamma"] else None,
        weighted=True)
declare("magmax", "full_space", paper="2407.06322", defaults={"alpha": 0.5, "tie": "later"}, ranges={"alpha": REAL},
        choices={"tie": ("later", "first")}, legacy={"tie": "first"}, device_kernel=True)
declare("tsv", "spectral", paper="2412.00081", defaults={"alpha": 1.0}, matrices_only=True, ranges={"alpha": REAL})
declare("iso_c", "spectral", paper="2502.04959", defaults={"alpha": 1.0}, matrices_only=True, ranges={"alpha": REAL})
declare("iso_cts", "spectral", paper="2502.04959", defaults={"common": 0.8, "alpha": 1.0}, matrices_only=True,
        ranges={"common": UNIT, "alpha": REAL})
declare("concat", "lora_space", paper="2106.09685", defaults={"alpha": 1.0, "rank": 0}, space="lora",
        ranges={"alpha": REAL, "rank": NATURAL}, weighted=True)
declare("mean_ba", "lora_space", paper="2503.09271", defaults={"shared_b": "merge", "rank": 0}, space="lora",
        choices={"shared_b": ("merge", "stack")}, legacy={"shared_b": "stack"}, ranges={"rank": NATURAL}, weighted=True)
declare("core_space", "lora_space", paper="2509.17786",
        defaults={"rule": "task_arithmetic", "rank": 0, "seed": 0, "linear": "concat", "bases": "svd"},
        space="lora", legacy={"linear": "core", "bases": "explicit"}, ranges={"rank": NATURAL, "seed": NATURAL},
        choices={"rule": CORE_RULES, "linear": ("concat", "core"), "bases": ("svd", "implicit", "explicit")}, inner="rule",
        random=True, weighted=True)
declare("ema", "lora_space", paper="2503.09271", defaults={"beta": 0.7, "a_rule": "new"}, space="lora", ranges={"beta": UNIT},
        choices={"a_rule": ("new", "blend")}, legacy={"a_rule": "blend"})
declare("opcm", "sequential", paper="2501.09522", defaults={"alpha": 0.5, "project": "modules"}, ranges={"alpha": UNIT},
        choices={"project": ("modules", "linear", "matrices")}, legacy={"project": "matrices"}, space="sequential")
declare("regmean", "regression", paper="2212.09849", defaults={"ratio": 0.6}, ranges={"ratio": UNIT}, space="activation")
declare("com", "regression", paper="2508.21421", defaults={"ratio": 0.6}, ranges={"ratio": UNIT}, space="activation",
        chained=True)
