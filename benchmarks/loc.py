"""Lines of code in ``dithub/`` at git revisions: physical lines and source lines of code (SLOC).

    python benchmarks/loc.py 50d3b96 HEAD [--out benchmarks/results/loc.json]

SLOC counts the lines that hold a token other than a comment or a docstring (what cloc calls code
for Python); physical lines count everything, blank lines and docstrings included. Python files
under ``dithub/`` are counted, leaving out the demo and the test helpers that once lived there
(``dithub/demo/``, ``dithub/testing.py``: issue 19 moved them out of the package). Prints a table
and writes JSON.
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import subprocess
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEFT_OUT = ("dithub/demo/", "dithub/testing.py")
SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def sloc(text: str) -> int:
    """Lines holding a token other than a comment or a docstring (a string standing as a statement)."""
    docs: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            docs.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in SKIPPED:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return len(lines)


def count(rev: str) -> dict[str, int]:
    """Files, physical lines and SLOC of the package's Python files at ``rev``."""
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "dithub"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    files = [n for n in names if n.endswith(".py") and not n.startswith(LEFT_OUT)]
    texts = [subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
             for n in files]
    return {"files": len(files), "lines": sum(t.count("\n") for t in texts), "sloc": sum(sloc(t) for t in texts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+", help="git revisions (the first is the baseline)")
    parser.add_argument("--out", type=Path, default=None, help="write the counts here as JSON")
    args = parser.parse_args()
    counts = {rev: count(rev) for rev in args.revs}
    first = counts[args.revs[0]]
    print(f"{'revision':<12} {'files':>6} {'lines':>7} {'SLOC':>6}  lines / first  SLOC / first")
    for rev, c in counts.items():
        print(f"{rev:<12} {c['files']:>6} {c['lines']:>7} {c['sloc']:>6}  {c['lines'] / first['lines']:>13.3f}"
              f"  {c['sloc'] / first['sloc']:>12.3f}")
    if args.out:
        args.out.write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main()
