-- 0007: poison containment (see the PostgreSQL migration of the same number).
CREATE TABLE projection_quarantine (
    name           TEXT    NOT NULL,
    generation     INTEGER NOT NULL,
    event_id       TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    position       INTEGER NOT NULL,
    tx             INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    topic          TEXT    NOT NULL,
    error          TEXT    NOT NULL,
    held_behind    TEXT,
    quarantined_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (name, generation, event_id)
);

CREATE INDEX projection_quarantine_session_idx
    ON projection_quarantine (name, generation, session_id);

ALTER TABLE projection_tracking ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;

ALTER TABLE relay_positions ADD COLUMN dead_lettered INTEGER NOT NULL DEFAULT 0;
