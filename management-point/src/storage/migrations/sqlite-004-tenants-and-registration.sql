-- Collections belong to one tenant: a device of another tenant is never a member, so it
-- never receives the advertisements made to them. Existing collections are the default
-- tenant's.
ALTER TABLE collections ADD COLUMN tenant TEXT NOT NULL DEFAULT 'DEFAULT';
