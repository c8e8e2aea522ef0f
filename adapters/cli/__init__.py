"""The ``sessionstore`` command line: typer wiring and rich rendering; the work is elsewhere.

Every command reads its settings when it runs (nothing connects at import time). ``root``
assembles the app from one module per command group; ``common`` has what they share.
"""

from sessionstore.adapters.cli.root import app, main

__all__ = ["app", "main"]
