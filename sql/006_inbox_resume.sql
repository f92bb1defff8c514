-- 006_inbox_resume: what resuming, retention and idempotent publishes need (src/inbox.c,
-- docs/delivery.md).

-- Each user's highest acknowledged seq, raised by the acks (never lowered, never past
-- last_seq). A client that connects without last_seq is sent what lies above it (offline
-- delivery); retention moves what lies above it to the dead letters when it grows old.
ALTER TABLE alert_inbox_seq ADD COLUMN acked_seq bigint NOT NULL DEFAULT 0 CHECK (acked_seq >= 0);
UPDATE alert_inbox_seq s SET acked_seq = a.seq
FROM (SELECT user_id, max(seq) AS seq FROM alert_inbox WHERE acked_at IS NOT NULL
      GROUP BY user_id) a
WHERE a.user_id = s.user_id;

-- Critical messages that were never acknowledged within --inbox-retention: moved here, with
-- why, instead of being deleted. Kept until an operator deletes them.
CREATE TABLE alert_inbox_dead (
    user_id    text NOT NULL,
    seq        bigint NOT NULL,
    type       text NOT NULL,
    payload    json NOT NULL,
    created_at timestamptz NOT NULL,
    dead_at    timestamptz NOT NULL DEFAULT now(),
    reason     text NOT NULL,
    PRIMARY KEY (user_id, seq)
);

-- Retention finds old messages by age, acknowledged or not.
CREATE INDEX alert_inbox_created_idx ON alert_inbox (created_at);

-- The ids of publish items ("id" in POST /api/publish), remembered for --inbox-retention: an
-- item published again with an id that is here is not sent again, and its answer is the
-- first one's. seq and user_id are the durable message's (NULL for a live push);
-- recipients is filled in once the first publish was delivered.
CREATE TABLE publish_ids (
    id         text PRIMARY KEY,
    user_id    text,
    seq        bigint,
    recipients bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX publish_ids_created_idx ON publish_ids (created_at);
