"""Storage backends: the event logs, view stores and queries of memory, SQLite and PostgreSQL."""
