-- The twin of sqlite-003: a report resent after a lost acknowledgement is stored once.
ALTER TABLE status ADD COLUMN report_id TEXT;
CREATE UNIQUE INDEX status_report ON status(device_id, report_id) WHERE report_id IS NOT NULL;
