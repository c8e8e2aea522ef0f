"""In-memory backend: event log, views and queries in one process (unit tests, ``memory://``)."""
