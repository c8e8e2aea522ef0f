-- 0004: tamper evidence (see the PostgreSQL migration of the same number).
ALTER TABLE events ADD COLUMN hash BLOB;

CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tx         INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    events     INTEGER NOT NULL,
    digest     BLOB    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
