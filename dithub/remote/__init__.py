"""Remotes on fsspec storage (a path, file://, memory://, s3://): fetch, push, clone, pull.

Only missing objects travel; every received object is re-hashed; refs move last, by
compare-and-swap under a lock object on the remote.
"""
from .location import Location
from .sync import (SyncResult, fetch, pull, push, remote_add, remote_remove, remotes, set_upstream,
                   upstream)
from .transfer import Plan, plan

__all__ = [
    "Location", "Plan", "SyncResult", "fetch", "plan", "pull", "push", "remote_add",
    "remote_remove", "remotes", "set_upstream", "upstream",
]
