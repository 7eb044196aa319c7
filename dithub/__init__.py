"""dithub: Git for adapter modules (LoRA adapters, task vectors) and their base checkpoints."""
from .errors import (BadInput, CorruptObject, DithubError, IncompatibleAdapters, NotARepository, ObjectNotFound, RefConflict,
                     RefNotFound, RemoteError)
from .repo import CommitResult, Repo, Status

__version__ = "0.1.0"

__all__ = ["Repo", "CommitResult", "Status", "DithubError", "BadInput", "CorruptObject", "IncompatibleAdapters", "NotARepository",
           "ObjectNotFound", "RefConflict", "RefNotFound", "RemoteError"]
