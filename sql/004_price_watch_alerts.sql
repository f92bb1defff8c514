-- 004_price_watch_alerts: what the price-watch monitor last alerted, per watch.
--
-- The monitor's one statement per round (src/monitor_watch.c) upserts a row here for each
-- matching watch whose deal price differs from the recorded one, and sends an alert for
-- exactly those rows; it deletes the rows of watches that no longer match. So a watch alerts
-- once per price change while it matches, across restarts and nodes, and again after it
-- stopped matching and matches anew.
--
-- No foreign key to price_watches on purpose: the same statement deletes the rows of watches
-- that are gone (they no longer match), and a key would make a round fail outright when a
-- watch is deleted between its snapshot and its insert here.

CREATE TABLE price_watch_alerts (
    watch_id   bigint PRIMARY KEY,             -- price_watches.id
    price      numeric(12, 2) NOT NULL,        -- the deal's price in the last alert
    alerted_at timestamptz NOT NULL DEFAULT now(),
    node       text                            -- which dealwire alerted, for operators
);
