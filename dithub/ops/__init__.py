"""Operations: one module per verb that reads or changes history (commit, merge, rebase, revert,
sync, maintenance, diff). They take a repository (``store.view.RepoView``) and never build one."""

__all__: list[str] = []  # import the verb modules themselves (they load torch)
