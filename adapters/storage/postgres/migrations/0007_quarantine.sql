-- 0007: poison containment (docs/quarantine.md, decisions §22).
--
-- projection_quarantine: events one generation of a projection did not apply. The first event
-- of a session that failed (its handler raised, the database refused its rows, or the row
-- cannot be decoded) is stored with the error and no held_behind; the session's later events
-- in that generation are stored with held_behind = that event's id and wait behind it, so the
-- view never shows a state that skipped an event. Every other session keeps flowing. Rows are
-- written in the same transaction as the view rows and the tracking move that pass the event,
-- deleted in the same transaction as the view rows of a successful retry, and dropped with
-- their generation.
CREATE TABLE projection_quarantine (
    name           text        NOT NULL,
    generation     integer     NOT NULL,
    event_id       uuid        NOT NULL,
    session_id     uuid        NOT NULL,
    position       bigint      NOT NULL,
    tx             bigint      NOT NULL,
    version        integer     NOT NULL,
    topic          text        NOT NULL,
    error          text        NOT NULL,
    held_behind    uuid,
    quarantined_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (name, generation, event_id)
);

CREATE INDEX projection_quarantine_session_idx
    ON projection_quarantine (name, generation, session_id);

-- projection_tracking.seq: how many commits moved or re-asserted the row. A retry of
-- quarantined events commits view rows without moving the cursor, so the cursor alone no
-- longer proves that nothing was written since a runner loaded its rows: every commit's
-- compare-and-set checks (tx, position, seq) and increments seq.
ALTER TABLE projection_tracking ADD COLUMN seq bigint NOT NULL DEFAULT 0;

-- relay_positions.dead_lettered: events the relay could not publish (a row it cannot decode or
-- encode) and sent to the dead-letter topic instead, so it could move past them.
ALTER TABLE relay_positions ADD COLUMN dead_lettered bigint NOT NULL DEFAULT 0;
