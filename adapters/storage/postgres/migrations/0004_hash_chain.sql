-- 0004: tamper evidence (see adapters/chain.py and docs/audit.md).
--
-- events.hash: SHA-256 chain per session over each event's stored bytes, written with the event.
-- NULL only for rows written before this migration; verify checks their continuity and the
-- first hashed event chains onto them.
ALTER TABLE events ADD COLUMN hash bytea;

-- Checkpoints chain every event hash in log order up to a cursor. Copy them out of the
-- database (or sign them) to make rewriting history detectable by someone who can write here.
CREATE TABLE audit_checkpoints (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx         bigint      NOT NULL,
    position   bigint      NOT NULL,
    events     bigint      NOT NULL,
    digest     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
