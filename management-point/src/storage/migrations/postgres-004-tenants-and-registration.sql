-- The twin of sqlite-004: collections belong to one tenant.
ALTER TABLE collections ADD COLUMN tenant TEXT NOT NULL DEFAULT 'DEFAULT';
