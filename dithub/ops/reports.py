"""The last ``verify`` report of each commit, kept in the repository (``.dithub/verify/ID.json``) so
that a model card can cite it. Local records, like git's notes: neither pushed nor fetched."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..store import ObjectId, atomic_write, is_object_id
from ..store.view import RepoView


def _path(repo: RepoView, oid: ObjectId) -> Path | None:
    if repo.path is None or not is_object_id(oid):
        return None
    return repo.path / ".dithub" / "verify" / f"{oid}.json"


def save_report(repo: RepoView, oid: ObjectId, report: dict[str, Any]) -> None:
    """Keep ``report`` (a ``VerifyReport.to_json()``) as commit ``oid``'s last."""
    if (path := _path(repo, oid)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(report, indent=1, sort_keys=True).encode())


def last_report(repo: RepoView, oid: ObjectId) -> dict[str, Any] | None:
    """Commit ``oid``'s last verify report, or None (never run, or unreadable: a card then leaves it out)."""
    path = _path(repo, oid)
    try:
        report = json.loads(path.read_bytes()) if path is not None else None
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("commit") == oid else None
