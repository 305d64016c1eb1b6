-- The twin of sqlite-002: signed programs, reruns, downgrades, code-signing CRLs.
ALTER TABLE packages ADD COLUMN programs TEXT NOT NULL DEFAULT '[]';
ALTER TABLE programs ADD COLUMN signed_program TEXT;
ALTER TABLE advertisements ADD COLUMN rerun TEXT NOT NULL DEFAULT 'never';
ALTER TABLE advertisements ADD COLUMN allow_downgrade BIGINT NOT NULL DEFAULT 0;
CREATE TABLE crls (
    issuer TEXT PRIMARY KEY,
    pem TEXT NOT NULL,
    this_update BIGINT NOT NULL,
    added BIGINT NOT NULL
);
