"""``python -m sessionstore``: the command line, as the ``sessionstore`` console script."""

from sessionstore.adapters.cli import main

main()
