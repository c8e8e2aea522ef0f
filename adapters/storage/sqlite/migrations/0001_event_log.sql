-- 0001: the event log and the idempotency keys (SQLite, the embedded default).
--
-- SQLite has one writer at a time and AUTOINCREMENT never reuses or reorders rowids, so
-- `position` order is commit order: readers tail `position > last` safely.
-- UNIQUE (session_id, version) is the optimistic concurrency check.
CREATE TABLE events (
    position      INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id    TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    event_id      TEXT    NOT NULL UNIQUE,
    topic         TEXT    NOT NULL,
    class_version INTEGER NOT NULL CHECK (class_version >= 1),
    tenant_id     TEXT    NOT NULL,
    occurred_at   TEXT    NOT NULL,
    recorded_at   TEXT    NOT NULL,
    state         BLOB    NOT NULL,
    UNIQUE (session_id, version)
);

-- Events are immutable: refuse UPDATE and DELETE in the database itself.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: UPDATE on events refused');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: DELETE on events refused');
END;

CREATE TABLE idempotency_keys (
    key           TEXT    PRIMARY KEY,
    session_id    TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    first_version INTEGER NOT NULL,
    last_version  INTEGER NOT NULL,
    created_at    TEXT    NOT NULL
) WITHOUT ROWID;
