-- The twin of sqlite-005: hawkBit's confirmation flow.
ALTER TABLE devices ADD COLUMN auto_confirm TEXT;
UPDATE actions SET status = 'waiting'
 WHERE status IN ('scheduled', 'retrieved')
   AND advertisement_id IN (SELECT id FROM advertisements WHERE kind = 'available');
