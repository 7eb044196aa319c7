"""Who writes history: the author recorded in commits, tags and reflogs."""
from __future__ import annotations

import getpass
import os


def default_author() -> str:
    """``DITHUB_AUTHOR``, else the login name."""
    try:
        return os.environ.get("DITHUB_AUTHOR") or getpass.getuser()
    except Exception:  # noqa: BLE001  no login name in some containers
        return "unknown"
