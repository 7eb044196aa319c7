"""A text graph of the commit DAG for ``log --graph`` (one lane per open line of history)."""
from __future__ import annotations

from collections.abc import Sequence


def graph_prefixes(order: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
    """For commits in topological order (id, parents): the graph lines before and at each commit
    (one or more lines each; the last one holds ``*`` in its lane)."""
    lanes: list[str | None] = []
    out: list[list[str]] = []
    for oid, parents in order:
        lines: list[str] = []
        if oid in lanes:
            col = lanes.index(oid)
            merging = [i for i, lane in enumerate(lanes) if lane == oid and i != col]
            if merging:
                lines.append(" ".join("/" if i in merging else ("|" if lane else " ") for i, lane in enumerate(lanes)))
                for i in merging:
                    lanes[i] = None
        else:
            col = lanes.index(None) if None in lanes else len(lanes)
            if col == len(lanes):
                lanes.append(oid)
            lanes[col] = oid
        lines.append(" ".join("*" if i == col else ("|" if lane else " ") for i, lane in enumerate(lanes)))
        lanes[col] = parents[0] if parents else None
        for p in parents[1:]:
            if p not in lanes:
                free = lanes.index(None) if None in lanes else len(lanes)
                if free == len(lanes):
                    lanes.append(p)
                lanes[free] = p
                lines.append(" ".join("\\" if i == free else ("|" if lane else " ") for i, lane in enumerate(lanes)))
        while lanes and lanes[-1] is None:
            lanes.pop()
        out.append([line.rstrip() for line in lines])
    return out
