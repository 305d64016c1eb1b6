-- Native mode: the certificate a device last authenticated with (SHA-256 of its DER), and the
-- certificates an administrator revoked (dmmp device revoke), refused at once.
ALTER TABLE devices ADD COLUMN cert_sha256 TEXT;
CREATE TABLE revoked_certificates (
    sha256 TEXT PRIMARY KEY,
    device_id INTEGER REFERENCES devices(id) ON DELETE SET NULL,
    revoked INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
