"""SQLite schema migrations, applied in order by ``sessionstore db migrate``."""
