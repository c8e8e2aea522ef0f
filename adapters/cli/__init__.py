"""The ``sessionstore`` command line: typer wiring and rich rendering.

The work happens elsewhere; ``root`` holds the app the console script runs.
"""

from sessionstore.adapters.cli.root import app, main

__all__ = ["app", "main"]
