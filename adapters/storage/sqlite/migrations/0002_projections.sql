-- 0002: bookkeeping of the projections (see the PostgreSQL migration of the same number).
CREATE TABLE projections (
    name              TEXT    PRIMARY KEY,
    active_generation INTEGER NOT NULL,
    latest_generation INTEGER NOT NULL,
    updated_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE projection_tracking (
    name       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    tx         INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (name, generation)
);
