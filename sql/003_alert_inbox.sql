-- 003_alert_inbox: the durable per-user inbox of critical messages (DESIGN.md, "Durable
-- delivery"). A message is written here with the user's next seq before it is sent; the
-- client acks by seq, and on reconnect gets what it missed, in seq order.

CREATE TABLE alert_inbox (
    user_id    text NOT NULL,
    seq        bigint NOT NULL CHECK (seq > 0),
    type       text NOT NULL,                  -- the message's wire type, e.g. 'price_alert'
    payload    jsonb NOT NULL,                 -- the message as sent
    created_at timestamptz NOT NULL DEFAULT now(),
    acked_at   timestamptz,                    -- NULL until the client acks
    PRIMARY KEY (user_id, seq)
);

-- Retention sweeps look for old unacked messages.
CREATE INDEX alert_inbox_unacked_idx ON alert_inbox (created_at) WHERE acked_at IS NULL;
