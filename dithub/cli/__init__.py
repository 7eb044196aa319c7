"""The command line: a thin typer layer over ``dithub.Repo``."""
from .app import app, main

__all__ = ["app", "main"]
