-- The twin of sqlite-014: API tokens, administrators' roles, and the append-only audit trail.
CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    tenant       TEXT,
    token_sha256 TEXT NOT NULL UNIQUE,
    created      BIGINT NOT NULL,
    expires      BIGINT,
    revoked      BIGINT
);
ALTER TABLE administrators ADD COLUMN role TEXT NOT NULL DEFAULT 'administrator';
CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    time    BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    source  TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    before  TEXT,
    after   TEXT
);
CREATE INDEX audit_by_time ON audit (time, id);
CREATE FUNCTION dm_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION dm_audit_append_only();
CREATE TRIGGER audit_never_truncated BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION dm_audit_append_only();
