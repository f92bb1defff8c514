/*
 * monitor — the deal monitors (docs/operations.md): rounds on the worker pool, each on its
 * own period (--hot-deal-interval, --trending-interval, --watch-interval), that read the
 * database and push events through the hub.
 *
 *   hot_deals      deals created in the last hour with savings over 30 % or a discount over
 *                  200 $, each announced once: a deal_alert "hot_deal" to everyone. "Once"
 *                  holds across restarts and nodes: the round records the deal in
 *                  hot_deal_announcements in the same statement that selects it (INSERT ...
 *                  ON CONFLICT DO NOTHING RETURNING), and announces only what it inserted.
 *   trending       deals with at least 3 active price watches, the most watched first (at
 *                  most DW_MONITOR_TRENDING_MAX): a deal_alert "trending" to everyone, every
 *                  round.
 *   price_watches  active watches whose deal's price is at or under the watch's threshold, or
 *                  whose inventory is at or under its inventory threshold: a price_alert to
 *                  the watch's user. The price alerted is recorded per watch
 *                  (price_watch_alerts) in the same statement, so a watch alerts again only
 *                  when the price changes while it still matches; a watch that stops matching
 *                  forgets it, so matching again alerts again. An alert counts as sent
 *                  whether or not the user is connected (price_alert is critical: the
 *                  durable inbox is what keeps it for a user who is away).
 *
 * Several nodes on one database: rounds run only on the node that leads the monitors (leader.h,
 * a PostgreSQL advisory lock); another node takes over within a second of the leader's end.
 *
 * A round does nothing while no client is connected or the schema is not up to date yet, and
 * skips silently while the database is unavailable (-EAGAIN: the store logs the outage). A
 * round that fails otherwise logs one warning, at most one a minute per monitor. Every
 * round's work is a fixed number of set-based statements, whatever the number of watches.
 * At --log-level debug each round that ran logs "<monitor> round done in <ms> ms (...)", and
 * each skipped one "<monitor> round skipped: <why>".
 */
#ifndef DEALWIRE_MONITOR_H
#define DEALWIRE_MONITOR_H

struct dw_config;
struct dw_db;
struct dw_hub;
struct dw_monitors;
struct dw_workers;

/* Trending deals announced per round, at most (the most watched first). */
#define DW_MONITOR_TRENDING_MAX 10
/* Active watches a deal needs to be trending. */
#define DW_MONITOR_TRENDING_MIN_WATCHES 3
/* Hot deals announced per round, at most; the rest wait for the next round (oldest first). */
#define DW_MONITOR_HOT_DEALS_MAX 100
/* Price alerts claimed per statement; a round repeats the statement until it claims fewer, so
 * a mass price drop costs memory for one batch at a time. */
#define DW_MONITOR_WATCH_BATCH 20000

/* thread: main, after dw_db_start(). Schedules the three monitors on pool with cfg's periods,
 * and with cfg->demo_activity > 0 the demo market simulator's ticks (demo.h), which run under
 * the rules above and log "demo_activity round done in <ms> ms (...)" at debug.
 * db, hub and pool are borrowed until dw_monitors_stop() returns; cfg only for the call.
 * Returns the monitors, or NULL after a log line when the timer thread cannot start. */
struct dw_monitors *dw_monitors_start(const struct dw_config *cfg, struct dw_db *db,
                                      struct dw_hub *hub, struct dw_workers *pool);

/* thread: main, before the pool and db stop. Stops scheduling rounds, waits for the rounds
 * in progress (a round between two batches stops early), and frees mons. NULL is a no-op. */
void dw_monitors_stop(struct dw_monitors *mons);

#endif
