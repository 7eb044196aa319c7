"""Imports point down: the kernels know no merge method (issue 19). Read from the source, function-level
imports included, so a lazy import cannot hide an upward dependency."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dithub"


def _imports(path: Path) -> set[str]:
    """The dithub modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "dithub" or m.startswith("dithub.")}


def test_kernels_import_nothing_above_them():
    allowed = ("dithub.kernels", "dithub.errors")
    for path in sorted((PACKAGE / "kernels").glob("*.py")):
        upward = sorted(m for m in _imports(path) if not m.startswith(allowed))
        assert not upward, f"dithub/kernels/{path.name} imports {upward}"
