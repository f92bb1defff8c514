-- 001_deals: deals, the price watches users set on them, and the hot deals already announced.
--
-- Applied once by dealwire at start-up, inside the transaction the migration runner opens
-- (so no BEGIN/COMMIT here), and recorded in schema_migrations. Never edit a migration that
-- has shipped: add the next numbered file instead.

CREATE TABLE deals (
    id             text PRIMARY KEY,
    title          text NOT NULL,
    category       text NOT NULL,              -- 'flight', 'hotel', 'package', ...
    price          numeric(12, 2) NOT NULL CHECK (price >= 0),
    original_price numeric(12, 2) CHECK (original_price >= 0),  -- NULL when unknown
    inventory      integer CHECK (inventory >= 0),              -- seats or rooms left
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),

    -- Derived from the two prices, never written. These are what the hot-deal rule
    -- (savings over 30 % or a discount over 200 $) and the deal_alert message read; both are
    -- 0 when there is no original price or it is not above the price.
    discount numeric(12, 2) GENERATED ALWAYS AS (
        CASE WHEN original_price > price THEN original_price - price ELSE 0 END
    ) STORED,
    savings_percent numeric(5, 1) GENERATED ALWAYS AS (
        CASE WHEN original_price > price
             THEN round((original_price - price) * 100 / original_price, 1)
             ELSE 0 END
    ) STORED
);

-- The hot-deal monitor scans the deals created in the last hour.
CREATE INDEX deals_created_at_idx ON deals (created_at);

CREATE TABLE price_watches (
    id                  bigserial PRIMARY KEY,
    user_id             text NOT NULL,
    deal_id             text NOT NULL REFERENCES deals (id) ON DELETE CASCADE,
    threshold_price     numeric(12, 2) CHECK (threshold_price >= 0),  -- alert at or under it
    inventory_threshold integer CHECK (inventory_threshold >= 0),     -- alert at or under it
    active              boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (threshold_price IS NOT NULL OR inventory_threshold IS NOT NULL)
);

-- The watch monitor joins active watches to their deals; the trending monitor counts active
-- watches per deal.
CREATE INDEX price_watches_deal_active_idx ON price_watches (deal_id) WHERE active;
-- A user's own watches (API, dashboard).
CREATE INDEX price_watches_user_idx ON price_watches (user_id);

-- One row per deal announced as a hot deal. The monitor inserts with ON CONFLICT DO NOTHING
-- and announces only the rows it inserted, so a deal is announced once, across restarts and
-- across nodes.
CREATE TABLE hot_deal_announcements (
    deal_id      text PRIMARY KEY REFERENCES deals (id) ON DELETE CASCADE,
    announced_at timestamptz NOT NULL DEFAULT now(),
    node         text                              -- which dealwire announced it, for operators
);
