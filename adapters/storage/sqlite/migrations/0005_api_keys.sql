-- 0005: API keys for the HTTP API (see the PostgreSQL migration of the same number).
CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    tenant_id   TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('agent', 'reader', 'admin')),
    name        TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    revoked_at  TEXT
);
