-- 0006: what the Kafka relay and the Kafka-fed projection workers keep in the database.
--
-- relay_positions: how far a relay has published the log to a topic, as the reader's cursor
-- (tx, position). It moves only after the broker acknowledged every event up to it (acks=all),
-- so a relay that dies resumes from here and at worst publishes some events again.
CREATE TABLE relay_positions (
    topic      text        PRIMARY KEY,
    tx         bigint      NOT NULL,
    position   bigint      NOT NULL,
    published  bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- projection_applied: for views fed from Kafka (at-least-once, in per-session order), the last
-- version of each session applied to each generation of a projection. Written in the same
-- transaction as the view rows, so a redelivered event is recognised and skipped. Events at or
-- below the generation's tracking cursor were applied from the log (a rebuild) and are skipped
-- by comparing cursors instead.
CREATE TABLE projection_applied (
    name       text    NOT NULL,
    generation integer NOT NULL,
    session_id uuid    NOT NULL,
    version    bigint  NOT NULL,
    PRIMARY KEY (name, generation, session_id)
);
