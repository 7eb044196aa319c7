"""The typer application: global options, command registration, error mapping."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..errors import DithubError
from ..store.files import storage_error
from .commands import (base, bisect, blame, branch, cat_file, checkout, commit, config, diff, export, extract, fsck, gc, init, kernels, log,
                       ls_tree, merge, migrate, rebase, reflog, remote, reset, rev_parse, revert, show, status, tag, verify)
from .output import error_line
from .state import State

INTERNAL_ERROR = 70
INTERRUPTED = 130


Classes = tuple[type[BaseException], ...]
_EXIT: Classes = (typer.Exit,)
_ABORT: Classes = (typer.Abort,)
_USAGE: Classes = (typer.TyperException,)  # typer vendors click: its exceptions are typer's

app = typer.Typer(
    name="dithub", help="Git for adapter modules: history, branches and merges of LoRA adapters and task vectors.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Option("-C", help="Run as if started in this directory.")] = Path("."),
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")] = False,
) -> None:
    ctx.obj = State(directory, debug)


COMMANDS: tuple[Callable[..., None], ...] = (
    init.init, status.status, commit.commit, log.log, show.show, diff.diff, branch.branch, checkout.checkout, tag.tag,
    merge.merge, rebase.rebase, revert.revert, export.export, extract.extract, fsck.fsck, gc.gc, reflog.reflog, verify.verify,
    remote.fetch, remote.push, remote.pull, remote.clone, reset.reset, rev_parse.rev_parse, ls_tree.ls_tree, cat_file.cat_file,
    blame.blame, bisect.bisect, migrate.migrate, config.config)
for fn in COMMANDS:
    app.command(fn.__name__.replace("_", "-"))(fn)
app.add_typer(base.app, name="base")
app.add_typer(remote.app, name="remote")
app.add_typer(verify.hooks, name="hooks")
app.add_typer(kernels.app, name="kernels")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; DithubError becomes one red line and its class's exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="dithub", standalone_mode=False)
        return 0
    except DithubError as exc:
        return _refused(exc)
    except _EXIT as exc:
        return exc.exit_code  # type: ignore[attr-defined]
    except _USAGE as exc:  # usage errors: click's own message, exit 2
        exc.show()  # type: ignore[attr-defined]
        return exc.exit_code  # type: ignore[attr-defined]
    except (*_ABORT, KeyboardInterrupt):  # type: ignore[misc]  # mypy reads a starred tuple as object
        error_line("interrupted")
        return INTERRUPTED
    except Exception as exc:  # never a traceback unless asked for
        classified = storage_error(exc, None, "access") if isinstance(exc, OSError) else None
        if classified is not None and not debug:  # a fault of the machine outside the stores' own I/O
            return _refused(classified)
        if debug:
            raise
        error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and report it)")
        return INTERNAL_ERROR


def _refused(exc: DithubError) -> int:
    error_line(f"{exc.message}" + (f" — {exc.hint}" if exc.hint else ""))
    return exc.exit_code
