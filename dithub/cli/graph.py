"""A text graph of the commit DAG for ``log --graph`` (one lane per open line of history)."""
from __future__ import annotations

from collections.abc import Sequence


def graph_prefixes(order: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
    """For commits in topological order (id, parents): the graph lines before and at each commit
    (one or more lines each; the last one holds ``*`` in its lane)."""
    lanes: list[str | None] = []
    out: list[list[str]] = []

    def row(mark: str, at: Sequence[int]) -> str:
        return " ".join(mark if i in at else ("|" if lane else " ") for i, lane in enumerate(lanes))

    def place(oid: str) -> int:
        """Put ``oid`` in the first free lane (a new one if none is free)."""
        col = lanes.index(None) if None in lanes else len(lanes)
        lanes[col:col + 1] = [oid]
        return col

    for oid, parents in order:
        lines: list[str] = []
        if oid in lanes:
            col = lanes.index(oid)
            merging = [i for i, lane in enumerate(lanes) if lane == oid and i != col]
            if merging:
                lines.append(row("/", merging))
                for i in merging:
                    lanes[i] = None
        else:
            col = place(oid)
        lines.append(row("*", [col]))
        lanes[col] = parents[0] if parents else None
        for p in parents[1:]:
            if p not in lanes:
                lines.append(row("\\", [place(p)]))
        while lanes and lanes[-1] is None:
            lanes.pop()
        out.append([line.rstrip() for line in lines])
    return out
