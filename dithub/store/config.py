"""A repository's config file (``.dithub/config.json``): its format, its object hash and its
remotes. Read here, so that opening a repository knows how it names objects."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CorruptObject
from .atomic import atomic_write
from .ids import LEGACY_HASH, Hash, hash_named


def read_config(meta: Path) -> dict[str, Any]:
    """The config of the repository whose ``.dithub`` is ``meta`` (``{"format": 1}`` where none is)."""
    path = meta / "config.json"
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {"format": 1}
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptObject(f"{path} is not valid JSON: {exc}", "fix the file, or restore it from a backup") from None
    if not isinstance(value, dict):
        raise CorruptObject(f"{path} is not a JSON object", "fix the file, or restore it from a backup")
    return value


def write_config(meta: Path, config: dict[str, Any]) -> None:
    atomic_write(meta / "config.json", json.dumps(config, indent=1, sort_keys=True).encode())


def repo_hash(meta: Path) -> Hash:
    """The object hash the config names (``xxh3`` where it names none: made before issue 26)."""
    name = read_config(meta).get("hash", LEGACY_HASH.name)
    try:
        return hash_named(str(name))
    except ValueError as exc:
        raise CorruptObject(f"{meta / 'config.json'}: {exc}", "this repository was made by a newer dithub, or the file is damaged") from None
