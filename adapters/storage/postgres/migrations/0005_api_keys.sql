-- 0005: API keys for the HTTP API. Only a SHA-256 of each key's secret is stored; the key itself
-- is shown once, when it is created (`sessionstore keys create`).
CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    secret_hash bytea       NOT NULL,
    tenant_id   text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('agent', 'reader', 'admin')),
    name        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at  timestamptz
);
