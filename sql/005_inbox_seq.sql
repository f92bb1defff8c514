-- 005_inbox_seq: the durable inbox's numbering (src/inbox.c, docs/delivery.md).
--
-- Each user's last seq, taken and raised in the same statement that writes the messages:
-- INSERT ... ON CONFLICT DO UPDATE locks the user's row until the statement's transaction
-- ends, so writers for one user (threads here, or several nodes) take turns, and seq stays
-- increasing and gap-free per user even when a write is rolled back.
CREATE TABLE alert_inbox_seq (
    user_id  text PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);

-- The payload is kept as the exact text that was sent (json, not jsonb): a replay sends the
-- same bytes, numbers keep their spelling and members their order, and every JSON text a
-- publisher may send is accepted (jsonb refuses \u0000 in strings).
ALTER TABLE alert_inbox ALTER COLUMN payload TYPE json USING payload::json;
