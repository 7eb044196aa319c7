"""dithub verify, dithub hooks install/uninstall/run"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ...errors import BadInput, VerifyFailed
from ...verify.policy import CHECK_NAMES as CHECKS
from ...verify.policy import load_policy
from ..options import Executor, Json
from ..output import emit, err, out, print_json, progress_bars
from ..state import repo as open_repo

if TYPE_CHECKING:
    from ...verify import VerifyReport

Policy = Annotated[Path | None, typer.Option("--policy", help="Policy file (default: dithub.toml at the repository root).")]
AllowCode = Annotated[bool, typer.Option("--allow-code", help="Let the policy name probe/metric functions (module:function) "
                                        "of installed packages; never modules inside the repository or the working tree.")]
STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"


def render(report: VerifyReport, console: Console = out) -> None:
    """The report as a rich table: check, status, figure, threshold, detail."""
    table = Table(title=f"verify {report.ref} ({report.commit[:12]})" + (f", policy {report.policy}" if report.policy else ""))
    for column in ("check", "status", "figure", "threshold", "detail"):
        table.add_column(column, justify="right" if column in ("figure", "threshold") else "left")
    for c in report.checks:
        table.add_row(c.check, f"[{STYLE[c.status]}]{c.status}[/]", _figure(c.figure), _figure(c.threshold), escape(c.detail))
    console.print(table)


def _policy_path(ctx: typer.Context, policy: Path | None) -> Path | None:
    if policy is not None:
        return policy
    default = open_repo(ctx).path / "dithub.toml"  # type: ignore[operator]
    return default if default.is_file() else None


def _failed(reports: list[VerifyReport], what: str) -> VerifyFailed:
    bad = [f"{r.ref}: {', '.join(c.check for c in r.failed)}" for r in reports if not r.ok]
    return VerifyFailed(f"{what}: {'; '.join(bad)}", "the table says why; fix the merge or the policy")


def verify(
    ctx: typer.Context,
    revs: Annotated[list[str] | None, typer.Argument(help="Revisions to verify (default: HEAD).")] = None,
    all_branches: Annotated[bool, typer.Option("--all", help="Verify every branch.")] = False,
    executor: Executor = "local",
    policy: Policy = None,
    against: Annotated[list[str] | None, typer.Option("--against", help="Known-bad refs (glob) for the backdoor screen, e.g. 'refs/tags/known-bad/*'.")] = None,
    check: Annotated[list[str] | None, typer.Option("--check", help=f"Run only these checks ({', '.join(CHECKS)}).")] = None,
    allow_code: AllowCode = False,
    as_json: Json = False,
) -> None:
    """Run the policy's checks on commits (HEAD, the revisions named, or every branch with --all); exit 11 if any fails."""
    for name in check or []:
        if name not in CHECKS:
            raise typer.BadParameter(f"unknown check {name!r} (valid: {', '.join(CHECKS)})")
    repo = open_repo(ctx)
    if all_branches and revs:
        raise BadInput("name revisions or --all, not both")
    targets = sorted(repo.branches()) if all_branches else (revs or ["HEAD"])
    rules = load_policy(_policy_path(ctx, policy), allow_code=allow_code)
    with progress_bars() as progress:
        reports = repo.verify_many(targets, policy=rules, against=against, checks=check, executor=executor, progress=progress)
    if len(reports) == 1 and not all_branches:  # one commit: the report itself, as before
        emit(as_json, reports[0].to_json(), lambda: render(reports[0]))
    else:
        def each() -> None:
            for r in reports:
                render(r)

        emit(as_json, [r.to_json() for r in reports], each)
    if not all(r.ok for r in reports):
        raise _failed(reports, "verify failed")


hooks = typer.Typer(help="Git hooks that run verify on the dithub branches that changed.", no_args_is_help=True)


@hooks.command("install")
def hooks_install(
    ctx: typer.Context,
    git: Annotated[Path | None, typer.Option("--git", help="A folder inside the host git repository (default: this one).")] = None,
    policy: Policy = None,
    force: Annotated[bool, typer.Option("--force", help="Replace hooks dithub did not write (kept as *.dithub-backup).")] = False,
    allow_code: AllowCode = False,
) -> None:
    """Install pre-commit and pre-push hooks in the host git repository."""
    from ...verify import hooks as git_hooks

    for path in git_hooks.install(open_repo(ctx), git_dir=git, policy=policy, force=force, allow_code=allow_code):
        out.print(f"installed {path}")


@hooks.command("uninstall")
def hooks_uninstall(
    ctx: typer.Context,
    git: Annotated[Path | None, typer.Option("--git", help="A folder inside the host git repository.")] = None,
) -> None:
    """Remove dithub's hooks (and put back any hook they replaced)."""
    from ...verify import hooks as git_hooks

    removed = git_hooks.uninstall(open_repo(ctx), git_dir=git)
    for path in removed:
        out.print(f"removed {path}")
    if not removed:
        out.print("no dithub hooks installed")


@hooks.command("run")
def hooks_run(
    ctx: typer.Context,
    hook: Annotated[str, typer.Argument(help="pre-commit or pre-push (what the installed hook passes).")] = "pre-commit",
    policy: Policy = None,
    allow_code: AllowCode = False,
    as_json: Json = False,
) -> None:
    """Verify every covered branch whose head changed since it last passed (what the hooks run)."""
    from ...verify import hooks as git_hooks

    repo = open_repo(ctx)
    rules = load_policy(_policy_path(ctx, policy), allow_code=allow_code)
    with progress_bars() as progress:
        reports = git_hooks.run_hook(repo, rules, progress=progress, on_report=(lambda r: None) if as_json else (lambda r: render(r, err)))
    if as_json:
        print_json({"hook": hook, "reports": [r.to_json() for r in reports]})
    elif not reports:
        err.print("dithub verify: no branch changed since it last passed")
    if any(not r.ok for r in reports):
        raise _failed(reports, f"dithub {hook} hook: verify failed")
