-- Administrators' client certificates, pinned by the SHA-256 of their DER: a certificate here
-- opens the console as `name` while it is valid, with no password.
CREATE TABLE administrator_certificates (
    sha256     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    created    INTEGER NOT NULL
);
