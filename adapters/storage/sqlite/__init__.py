"""SQLite backend: the embedded default event log."""
