"""PostgreSQL backend: the production event log."""
