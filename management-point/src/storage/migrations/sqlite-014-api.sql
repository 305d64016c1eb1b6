-- The management API (docs/management-api.md): its tokens, each with a role (and optionally a
-- tenant), stored as the SHA-256 of the secret shown once; and the audit trail of every
-- change, append-only: the triggers refuse to change or remove a row.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    tenant       TEXT,
    token_sha256 TEXT NOT NULL UNIQUE,
    created      INTEGER NOT NULL,
    expires      INTEGER,
    revoked      INTEGER
);
ALTER TABLE administrators ADD COLUMN role TEXT NOT NULL DEFAULT 'administrator';
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    time    INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    source  TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    before  TEXT,
    after   TEXT
);
CREATE INDEX audit_by_time ON audit (time, id);
CREATE TRIGGER audit_never_updated BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_never_deleted BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
