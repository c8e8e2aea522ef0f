"""What the SQL backends (SQLite and PostgreSQL) share: the log, view tables and queries."""
