"""The one exception hierarchy of dithub. Every error says what went wrong, where (file, ref,
tensor, object) and what to do next; the CLI maps each class to a distinct exit code."""
from __future__ import annotations


class DithubError(Exception):
    """Root of every error dithub raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadInput(DithubError):
    """A path, file, name or parameter given by the user is not acceptable."""

    exit_code = 3


class NotARepository(DithubError):
    """No ``.dithub`` directory where one was expected."""

    exit_code = 4


class ObjectNotFound(DithubError):
    """An object id is not in the store."""

    exit_code = 5


class RefNotFound(DithubError):
    """A branch, tag, base or revision name does not resolve."""

    exit_code = 6


class CorruptObject(DithubError):
    """A stored object no longer hashes to its id, or does not parse."""

    exit_code = 7


class RefConflict(DithubError):
    """A ref moved (or is locked) under a compare-and-swap update."""

    exit_code = 8


class IncompatibleAdapters(DithubError):
    """Adapters (or an adapter and its base) do not fit together."""

    exit_code = 9


class RemoteError(DithubError):
    """A remote could not be reached or answered wrongly."""

    exit_code = 10


class VerifyFailed(DithubError):
    """A ``dithub verify`` check failed (the report says which and why)."""

    exit_code = 11


class StorageError(DithubError):
    """The machine refused a file operation: disk full, read-only file system, permission denied,
    file too large. Not damage: free space or fix permissions, and run the command again."""

    exit_code = 12


class KernelsUnavailable(DithubError):
    """The compiled merge kernels cannot be built here (no compiler, a failed build, an unsafe cache)."""

    exit_code = 13


__all__ = ["DithubError", "BadInput", "NotARepository", "ObjectNotFound", "RefNotFound", "CorruptObject", "RefConflict",
           "IncompatibleAdapters", "RemoteError", "VerifyFailed", "StorageError", "KernelsUnavailable"]
