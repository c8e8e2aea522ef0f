-- 0002: bookkeeping of the projections (views built from the log).
--
-- Each projection keeps its rows in tables suffixed with a generation number
-- (session_state_g1, ...) and queries read a SQL view with the plain name that points at the
-- active generation. A rebuild fills a new generation from position 0 while queries keep
-- reading the active one, then switches the views over in one transaction (blue/green).
-- The view tables themselves are created by the runner from their declarations in
-- projections/tables.py (they are disposable: the log can always rebuild them).
CREATE TABLE projections (
    name              text        PRIMARY KEY,
    active_generation integer     NOT NULL,
    latest_generation integer     NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per projection generation: how far it has applied the log, as the reader's cursor
-- (tx, position). It is updated in the same transaction as the view rows it accounts for, and
-- only from the cursor the writer started from, so a batch is applied exactly once.
CREATE TABLE projection_tracking (
    name       text        NOT NULL,
    generation integer     NOT NULL,
    tx         bigint      NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (name, generation)
);
