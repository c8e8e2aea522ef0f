"""Runs the HTTP API in its own process for the tests: ``http_launcher.py PORT``.

Settings come from the ``SESSIONSTORE_*`` environment, exactly as ``sessionstore serve`` reads
them; the schema must already be migrated (the tests migrate before they start the server).
"""

from __future__ import annotations

import sys

import uvicorn

from sessionstore.adapters.http.app import create_app
from sessionstore.adapters.settings import load_settings


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(
        create_app(load_settings()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
