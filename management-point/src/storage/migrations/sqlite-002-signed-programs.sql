-- Programs are signed by the publisher (the package records them; a program of dmmp names
-- one), advertisements say whether programs rerun and whether downgrades are allowed, and the
-- code-signing CAs' revocation lists are kept for devices.
ALTER TABLE packages ADD COLUMN programs TEXT NOT NULL DEFAULT '[]';
ALTER TABLE programs ADD COLUMN signed_program TEXT;
ALTER TABLE advertisements ADD COLUMN rerun TEXT NOT NULL DEFAULT 'never';
ALTER TABLE advertisements ADD COLUMN allow_downgrade INTEGER NOT NULL DEFAULT 0;
CREATE TABLE crls (
    issuer TEXT PRIMARY KEY,
    pem TEXT NOT NULL,
    this_update INTEGER NOT NULL,
    added INTEGER NOT NULL
);
