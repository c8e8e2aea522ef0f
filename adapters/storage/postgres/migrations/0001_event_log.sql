-- 0001: the event log and the idempotency keys.
--
-- events: one row per event, append-only. (session_id, version) is the primary key, so the
-- database itself rejects a second writer of the same version: that IS the optimistic
-- concurrency check (never read-then-write in Python).
--
-- Global order without a table lock: `position` comes from an identity sequence, which hands
-- out numbers at INSERT time, so transactions can commit out of position order and a reader
-- tailing `position > last` could pass over a row that commits later. Each row also records
-- the writing transaction's id (`tx`, xid8). Readers order the log by (tx, position) and only
-- read rows whose tx is below the oldest transaction still running
-- (pg_snapshot_xmin(pg_current_snapshot())): every such transaction has finished, so no row
-- can later appear before a reader's cursor. Writers take no lock beyond their own rows.
-- (Since 0.2 readers use a narrower horizon: only transactions writing this table count, so
-- other databases' and applications' transactions no longer hold them back. decisions.md §4.)
CREATE TABLE events (
    position      bigint GENERATED ALWAYS AS IDENTITY,
    tx            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    session_id    uuid        NOT NULL,
    version       integer     NOT NULL CHECK (version >= 1),
    event_id      uuid        NOT NULL,
    topic         text        NOT NULL,
    class_version smallint    NOT NULL CHECK (class_version >= 1),
    tenant_id     text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    state         bytea       NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (session_id, version),
    CONSTRAINT events_position_key UNIQUE (position),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

CREATE INDEX events_log_order_idx ON events (tx, position);

-- Events are immutable: refuse UPDATE and DELETE at the database, not just in our code.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on events refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- idempotency_keys: written in the same statement as the events of the request it belongs to,
-- so a key exists if and only if its events do.
CREATE TABLE idempotency_keys (
    key           text        PRIMARY KEY,
    session_id    uuid        NOT NULL,
    request_hash  text        NOT NULL,
    first_version integer     NOT NULL,
    last_version  integer     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
