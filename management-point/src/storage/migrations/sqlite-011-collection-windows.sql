-- A collection's daily maintenance window in UTC (`22:00-04:00`): its devices install update
-- deployments only inside it, unless a deployment has a window of its own.
ALTER TABLE collections ADD COLUMN maintenance_window TEXT;
