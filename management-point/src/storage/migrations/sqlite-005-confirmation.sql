-- hawkBit's confirmation flow: an action of an available advertisement waits for the
-- device's user to consent ('waiting'), unless the device turned auto-confirmation on
-- (auto_confirm: JSON {initiator, remark, activated_at}). Open available actions made before
-- wait for consent too.
ALTER TABLE devices ADD COLUMN auto_confirm TEXT;
UPDATE actions SET status = 'waiting'
 WHERE status IN ('scheduled', 'retrieved')
   AND advertisement_id IN (SELECT id FROM advertisements WHERE kind = 'available');
