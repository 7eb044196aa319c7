"""Imports point down: the kernels know no merge method (issue 19). Read from the source, function-level
imports included, so a lazy import cannot hide an upward dependency."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dithub"


def _imports(path: Path) -> set[str]:
    """The dithub modules ``path`` imports at run time (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for n in ast.walk(block)}  # annotations only: no import at run time
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
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


def test_nothing_beneath_the_facade_imports_it():
    """``dithub.repo`` (the facade) and the package root are imported by no module of the package but
    the CLI and the package root: the operations take a repository, they do not build one."""
    above = ("dithub.cli", "dithub.__init__", "dithub.__main__")
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if name.startswith(above) or name == "dithub.repo":
            continue
        wrong = sorted(m for m in _imports(path) if m in ("dithub", "dithub.repo"))
        assert not wrong, f"{name} imports {wrong}"


def test_operations_take_a_repo_view_not_the_facade():
    """Beneath the facade, a repository is a ``store.view.RepoView`` (a Protocol): no annotation,
    import or call names ``Repo`` itself (docstrings may)."""
    import re

    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if name.startswith(("dithub.cli", "dithub.__init__", "dithub.__main__")) or name == "dithub.repo":
            continue
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}  # (gitpython's git.Repo is an attribute)
        annotations = " ".join(ast.unparse(a) for n in ast.walk(tree) if isinstance(n, ast.arg) and (a := n.annotation) is not None)
        assert "Repo" not in names and not re.search(r"\bRepo\b", annotations), f"{name} names Repo"
