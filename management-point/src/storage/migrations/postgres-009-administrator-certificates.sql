-- The twin of sqlite-009: administrators' pinned client certificates.
CREATE TABLE administrator_certificates (
    sha256     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after  BIGINT NOT NULL,
    created    BIGINT NOT NULL
);
