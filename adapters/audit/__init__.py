"""Audit over an event log: filtered history (``history``), JSON Lines export and import.

The hash chain and checkpoints that prove the log unaltered are written by every storage backend
and live with them (``sessionstore.adapters.storage.chain``).
"""

from sessionstore.adapters.audit.export import (
    FORMAT,
    FORMAT_VERSION,
    ExportSummary,
    Progress,
    export,
    export_total,
)
from sessionstore.adapters.audit.history import (
    MAX_HISTORY_PAGE,
    HistoryPage,
    history,
    session_events,
)
from sessionstore.adapters.audit.importer import ImportSummary, import_log

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_HISTORY_PAGE",
    "ExportSummary",
    "HistoryPage",
    "ImportSummary",
    "Progress",
    "export",
    "export_total",
    "history",
    "import_log",
    "session_events",
]
