-- 0008: what the separately running processes say about themselves.
--
-- process_status: one row per running `projections run` (kind 'projections'), `projections run
-- --source kafka` ('kafka-worker') and `relay` ('relay') process, keyed by its instance
-- (host:pid). A process writes its row when its state changes (running, retrying with the last
-- error, stopped with the reason) and every heartbeat_seconds while it runs, and deletes it when
-- it exits cleanly; `projections status` and `relay status` show the rows. A row not written for
-- three heartbeats is shown as stale: its process died, hangs, or cannot reach this database. A
-- process that cannot reach the database cannot write its row; its logs say why. Rows of
-- processes gone for a day are deleted by the next process of the same kind that starts.
CREATE TABLE process_status (
    kind              text             NOT NULL,
    instance          text             NOT NULL,
    state             text             NOT NULL,
    detail            text             NOT NULL DEFAULT '',
    attempts          integer          NOT NULL DEFAULT 0,
    since             timestamptz      NOT NULL,
    heartbeat_seconds double precision NOT NULL,
    updated_at        timestamptz      NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, instance)
);
