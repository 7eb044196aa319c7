"""Models and adapters named on the Hugging Face Hub: ``hf://org/name[@revision]``.

The ``hf://`` mark makes a hub id unambiguous: an existing path is always a path, and an unmarked
name (``class/dog``) is never looked up on a hub. A marked id resolves through huggingface_hub's
own cache and download (``snapshot_download``): with ``HF_HUB_OFFLINE=1`` it is served from a
populated cache and never touches the network; online, the library downloads what is missing. The
resolved commit sha is what a commit records, so the same name always means the same files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

SCHEME = "hf://"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,254}")


@dataclass(frozen=True)
class HubSource:
    """A resolved hub reference: the id, the revision asked for, the commit sha and its snapshot folder."""

    repo_id: str
    revision: str | None
    sha: str
    path: Path

    def to_json(self) -> dict[str, str]:
        return {"hub": self.repo_id, "revision": self.sha}


def parse(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) of ``hf://org/name[@revision]``; None for text without the mark."""
    if not text.startswith(SCHEME):
        return None
    repo_id, _, revision = text[len(SCHEME):].partition("@")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (revision and (not _REVISION.fullmatch(revision) or ".." in revision)):
        raise BadInput(f"{text!r} is not a hub reference", "write hf://org/name or hf://org/name@revision")
    return repo_id, revision or None


def resolve(repo_id: str, revision: str | None = None) -> HubSource:
    """The local snapshot of ``repo_id`` at ``revision`` (default: main), through huggingface_hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    try:
        path = Path(snapshot_download(repo_id, revision=revision))
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise BadInput(f"{where} is not in the Hugging Face cache" + (" (HF_HUB_OFFLINE is set)" if offline else ""),
                       "download it first (huggingface-cli download), or unset HF_HUB_OFFLINE") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise BadInput(f"{where} cannot be resolved: {exc}", "check the id and the revision") from None
    return HubSource(repo_id, revision, path.name, path)


def source(text: str | os.PathLike[str]) -> tuple[Path, HubSource | None]:
    """A model or adapter named on the command line: an existing path first, then a marked hub id."""
    path = Path(text)
    if path.exists() or not str(text).startswith(SCHEME):
        return path, None
    ref = parse(str(text))
    assert ref is not None
    hub = resolve(*ref)
    return hub.path, hub
