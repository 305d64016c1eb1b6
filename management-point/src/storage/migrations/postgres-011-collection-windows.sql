-- The twin of sqlite-011: a collection's daily maintenance window.
ALTER TABLE collections ADD COLUMN maintenance_window TEXT;
