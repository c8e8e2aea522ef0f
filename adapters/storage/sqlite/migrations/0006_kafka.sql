-- 0006: the Kafka relay's positions and the Kafka-fed views' applied versions (see the
-- PostgreSQL migration of the same number).
CREATE TABLE relay_positions (
    topic      TEXT    PRIMARY KEY,
    tx         INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    published  INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE projection_applied (
    name       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    session_id TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    PRIMARY KEY (name, generation, session_id)
);
