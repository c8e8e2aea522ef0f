"""``python -m sessionstore.adapters.cli``: the command line, as when cli.py ran as a script."""

from sessionstore.adapters.cli import main

main()
