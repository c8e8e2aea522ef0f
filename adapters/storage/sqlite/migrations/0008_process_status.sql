-- 0008: the separately running processes' status rows (see the PostgreSQL migration of the same
-- number).
CREATE TABLE process_status (
    kind              TEXT    NOT NULL,
    instance          TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    detail            TEXT    NOT NULL DEFAULT '',
    attempts          INTEGER NOT NULL DEFAULT 0,
    since             TEXT    NOT NULL,
    heartbeat_seconds REAL    NOT NULL,
    updated_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (kind, instance)
);
