"""dithub status"""
from __future__ import annotations

import typer

from ..options import Json
from ..output import emit, out, short
from ..state import repo as open_repo


def status(ctx: typer.Context, as_json: Json = False) -> None:
    """Show the current branch, its head commit and base."""
    st = open_repo(ctx).status()
    payload = {
        "branch": st.branch, "head": st.head, "kind": st.kind, "base": st.base, "branches": st.branches,
        "message": st.commit.message if st.commit else None,
    }

    def human() -> None:
        out.print(f"On branch [bold]{st.branch}[/]" if st.branch else f"HEAD detached at {short(st.head)}")
        if st.commit is None:
            out.print("No commits yet (commit an adapter with `dithub commit PATH -m MSG`)")
            return
        out.print(f"Head: {short(st.head)} {st.commit.message.splitlines()[0] if st.commit.message else ''}")
        out.print(f"Adapter kind: {st.kind}; base: {st.base or 'none recorded'}; {st.branches} branch(es)")

    emit(as_json, payload, human)
