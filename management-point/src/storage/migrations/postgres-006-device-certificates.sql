-- The twin of sqlite-006: native mode's device certificates and revocations.
ALTER TABLE devices ADD COLUMN cert_sha256 TEXT;
CREATE TABLE revoked_certificates (
    sha256 TEXT PRIMARY KEY,
    device_id BIGINT REFERENCES devices(id) ON DELETE SET NULL,
    revoked BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
