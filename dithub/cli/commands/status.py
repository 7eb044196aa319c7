"""dithub status"""
from __future__ import annotations

import typer
from rich.markup import escape

from ..options import Json
from ..output import emit, out, short
from ..state import repo as open_repo


def status(ctx: typer.Context, as_json: Json = False) -> None:
    """Show the current branch, its head commit and base."""
    repo = open_repo(ctx)
    st = repo.status()
    payload = {
        "branch": st.branch, "head": st.head, "kind": st.kind, "base": st.base, "branches": st.branches,
        "message": st.commit.message if st.commit else None,
    }

    def human() -> None:
        out.print(f"On branch [bold]{st.branch}[/]" if st.branch else f"HEAD detached at {short(st.head)}")
        if st.commit is None:
            others = sorted(repo.branches())
            if not others:
                out.print("No commits yet (commit an adapter with `dithub commit PATH -m MSG`)")
                return
            listed = ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
            out.print(f"No commits on {escape(st.branch or 'HEAD')} yet; {len(others)} other branch(es): {escape(listed)}")
            out.print(f"Move HEAD to one with `dithub checkout {escape(others[0])}`, or commit here with `dithub commit PATH -m MSG`")
            return
        out.print(f"Head: {short(st.head)} {st.commit.message.splitlines()[0] if st.commit.message else ''}")
        out.print(f"Adapter kind: {st.kind}; base: {st.base or 'none recorded'}; {st.branches} branch(es)")

    emit(as_json, payload, human)
