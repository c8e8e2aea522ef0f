"""A projection runner in its own process, for the crash test: catch up, then exit 0.

Run as ``python tests/integration/projection_worker.py BATCH_SIZE`` with the
``SESSIONSTORE_*`` environment of the database to project.
"""

from __future__ import annotations

import sys

from sessionstore.adapters.bootstrap import open_log, open_views
from sessionstore.adapters.settings import load_settings
from sessionstore.projections import all_projections
from sessionstore.projections.runner import ProjectionRunner


def main() -> None:
    settings = load_settings()
    log, views = open_log(settings), open_views(settings)
    try:
        ProjectionRunner(log, views, all_projections(), batch_size=int(sys.argv[1])).catch_up()
    finally:
        views.close()
        log.close()


if __name__ == "__main__":
    main()
