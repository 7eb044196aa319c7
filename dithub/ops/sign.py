"""Signed commits (issue 26): a commit signed with an SSH key as git signs them (``ssh-keygen -Y
sign`` format, namespace ``dithub``; ``formats.sshsig``), checked against an allowed-signers file.

A signature covers the commit's bytes without it (``Commit.payload``): its tree, parents, base, op
and message — and through the tree every tensor by its id, which in a BLAKE3 repository pins the
bytes. ``Repo.signing(key)`` signs every commit the operations inside it write (commit, merge,
rebase, revert, class edits); the key is a file named there or by ``user.signingkey`` in the
repository's config. ``check_commit`` says whether a commit is signed, by a key the allowed-signers
file lists, and for which principals.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BadInput
from ..formats.sshsig import NAMESPACE, AllowedSigner, SignatureError, allowed_signers, load_private_key, sign, signer_of, verify
from ..store import Commit, read_config, write_config
from ..store.objects import Tag
from ..store.view import RepoView

Signable = TypeVar("Signable", Commit, Tag)
"""What carries a signature of its own bytes: commits and annotated tags."""

KEYS = {"user.signingkey": "the private SSH key commits are signed with (-S)",
        "signing.allowedsigners": "the allowed-signers file signatures are checked against (log --show-signature, show, fetch "
                                  "--verify-signatures)"}
"""The settings ``dithub config`` reads and writes, with what each is for."""


def get_setting(repo: RepoView, key: str) -> str | None:
    if key not in KEYS:
        raise BadInput(f"unknown setting {key!r}", "settings: " + ", ".join(KEYS))
    section, _, name = key.partition(".")
    value = _config(repo).get(section, {}).get(name)
    return str(value) if value is not None else None


def set_setting(repo: RepoView, key: str, value: str | None) -> None:
    """Set (or, with None, unset) a setting; file settings are checked to exist."""
    get_setting(repo, key)
    if value is not None and not Path(value).expanduser().is_file():
        raise BadInput(f"{key}: no such file {value}")
    config = _config(repo)
    section, _, name = key.partition(".")
    values = dict(config.get(section, {}))
    if value is None:
        values.pop(name, None)
    else:
        values[name] = str(Path(value).expanduser().resolve())
    config[section] = values
    assert repo.path is not None
    write_config(repo.path / ".dithub", config)


def _config(repo: RepoView) -> dict[str, Any]:
    if repo.path is None:
        raise BadInput("an in-memory repository has no settings")
    return read_config(repo.path / ".dithub")


def signing_key(repo: RepoView, path: str | None = None) -> object:
    """The private key to sign with: ``path``, else ``user.signingkey``; BadInput when neither."""
    chosen = path or (get_setting(repo, "user.signingkey") if repo.path is not None else None)
    if not chosen:
        raise BadInput("no signing key: -S signs with --signing-key FILE or the key set by "
                       "`dithub config user.signingkey FILE`", "make one with ssh-keygen -t ed25519 -f FILE")
    return load_private_key(Path(chosen).expanduser())


def signed(obj: Signable, key: object) -> Signable:
    """A commit or tag with its signature by ``key``."""
    return replace(obj, signature=sign(obj.payload(), key, NAMESPACE))


def sign_if_asked(repo: RepoView, obj: Signable) -> Signable:
    """A commit or tag, signed when the operation runs inside ``Repo.signing``."""
    key = getattr(repo, "signer", None)
    return signed(obj, key) if key is not None else obj


@dataclass(frozen=True)
class SignatureCheck:
    status: str
    """``good`` (verifies, by a listed key), ``untrusted`` (verifies, by a key no one is listed for,
    or no allowed-signers file to check against), ``bad`` (does not verify: the commit or the
    signature changed) or ``unsigned``."""
    principals: tuple[str, ...] = ()
    key: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "principals": list(self.principals), "key": self.key, "detail": self.detail}


def check_commit(commit: Commit | Tag, signers: list[AllowedSigner] | None) -> SignatureCheck:
    """Whether a commit (or an annotated tag) is signed, and by whom among ``signers`` (None: no
    file to check against)."""
    if commit.signature is None:
        return SignatureCheck("unsigned")
    try:
        key = verify(commit.payload(), commit.signature, NAMESPACE)
    except SignatureError as exc:
        return SignatureCheck("bad", detail=exc.message)
    principals = signer_of(key, signers or [])
    if not principals:
        why = "no allowed-signers file to check the key against" if signers is None else "its key is not in the allowed signers"
        return SignatureCheck("untrusted", key=key, detail=why)
    return SignatureCheck("good", principals, key)


def repo_signers(repo: RepoView, path: str | None = None) -> list[AllowedSigner] | None:
    """The allowed signers from ``path``, else ``signing.allowedsigners``; None when neither is set."""
    chosen = path or (get_setting(repo, "signing.allowedsigners") if repo.path is not None else None)
    return allowed_signers(Path(chosen).expanduser()) if chosen else None
