/*
 * monitor_watch — DESIGN: the price-watch round (monitor.h). However many watches there are,
 * a round is one statement (repeated only while a batch comes back full) that joins the active
 * watches to their deals with the rule, and a price_alert per row it returns, to the watch's
 * user, inside one hub batch.
 *
 * The one idea: the statement itself decides what is new. price_watch_alerts holds, per
 * watch, the deal price of its last alert. The statement (1) finds the matching watches,
 * (2) upserts the ones whose price differs from the recorded one and returns exactly those
 * (INSERT ... ON CONFLICT DO UPDATE ... WHERE the price differs ... RETURNING), and (3)
 * deletes the records of watches that no longer match, so that matching again alerts again.
 * Everything is in one statement, hence one snapshot and one transaction: two rounds racing
 * (here or on another node) meet on the primary key, and the second finds the price already
 * recorded and returns nothing. Steady state, when nothing changed, is one hash join over the
 * active watches and an empty result.
 *
 * An alert is recorded whether or not its user is connected at the time: price_alert is a
 * critical message, which the durable inbox (docs/protocol.md and the durable-delivery issue) keeps
 * for users who are away. Until that inbox exists, an alert for an absent user is not sent again.
 *
 * Reasons, as in the seed: "Price dropped by $30" (threshold minus price), "Price is at your
 * threshold of $150" when exactly at it, "Only 5 rooms left" (seats for flights, rooms for
 * hotels, nothing for the rest), "Sold out" at 0. A watch with only an inventory threshold
 * reports the current price as its threshold (drop 0).
 *
 * Runs on workers only (see monitor_int.h).
 */
#define DW_LOG_MODULE "monitor"
#include "dealwire/events.h"
#include "dealwire/hub.h"
#include "dealwire/monitor.h"
#include "dealwire/store.h"
#include "dealwire/wake.h"
#include "monitor_int.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* $1 how many alerts at most, $2 node. */
static const char watches_sql[] =
    "WITH hits AS MATERIALIZED ("
    "  SELECT w.id, w.user_id, w.deal_id, d.title, d.category, d.price, w.threshold_price,"
    "   d.inventory, w.inventory_threshold,"
    "   coalesce(d.price <= w.threshold_price, false) AS price_hit,"
    "   coalesce(d.inventory <= w.inventory_threshold, false) AS stock_hit,"
    "   a.price AS alerted_price"
    "  FROM price_watches w"
    "  JOIN deals d ON d.id = w.deal_id"
    "  LEFT JOIN price_watch_alerts a ON a.watch_id = w.id"
    "  WHERE w.active"
    "   AND (d.price <= w.threshold_price OR d.inventory <= w.inventory_threshold)),"
    " claimed AS ("
    "  INSERT INTO price_watch_alerts AS a (watch_id, price, node)"
    "  SELECT id, price, $2::text FROM hits WHERE alerted_price IS DISTINCT FROM price"
    "  ORDER BY id LIMIT $1::integer"
    "  ON CONFLICT (watch_id) DO UPDATE"
    "   SET price = excluded.price, alerted_at = now(), node = excluded.node"
    "   WHERE a.price IS DISTINCT FROM excluded.price"
    "  RETURNING a.watch_id),"
    " forgotten AS ("
    "  DELETE FROM price_watch_alerts a"
    "  WHERE NOT EXISTS (SELECT 1 FROM hits h WHERE h.id = a.watch_id))"
    " SELECT h.user_id, h.deal_id, h.title, h.category, h.price, h.threshold_price,"
    "  h.inventory, h.price_hit, h.stock_hit"
    " FROM hits h WHERE h.id IN (SELECT watch_id FROM claimed)"
    " ORDER BY h.user_id, h.id";

enum {
    COL_USER_ID,
    COL_DEAL_ID,
    COL_TITLE,
    COL_CATEGORY,
    COL_PRICE,
    COL_THRESHOLD,
    COL_INVENTORY,
    COL_PRICE_HIT,
    COL_STOCK_HIT,
    NCOLS
};

/* ------------------------------------------------------------------------------------------
 * Reasons (pure)
 * ------------------------------------------------------------------------------------------ */

/* v (>= 0, a price) as "$30" when whole, else "$30.50". */
static void format_money(char *buf, size_t size, double v)
{
    long long cents = (long long)(v * 100 + 0.5);

    if (cents % 100 == 0)
        snprintf(buf, size, "$%lld", cents / 100);
    else
        snprintf(buf, size, "$%lld.%02lld", cents / 100, cents % 100);
}

/* The reason for a price at or under threshold. */
static void price_reason(char *buf, size_t size, double price, double threshold)
{
    char money[32];
    double drop = threshold > price ? threshold - price : 0;

    if (drop >= 0.005) {
        format_money(money, sizeof(money), drop);
        snprintf(buf, size, "Price dropped by %s", money);
    } else {
        format_money(money, sizeof(money), threshold);
        snprintf(buf, size, "Price is at your threshold of %s", money);
    }
}

/* The reason for an inventory at or under the watch's threshold, in the deal's own unit. */
static void stock_reason(char *buf, size_t size, long inventory, const char *category)
{
    const char *unit = "";

    if (inventory <= 0) {
        snprintf(buf, size, "Sold out");
        return;
    }
    if (strcmp(category, "hotel") == 0)
        unit = inventory == 1 ? " room" : " rooms";
    else if (strcmp(category, "flight") == 0)
        unit = inventory == 1 ? " seat" : " seats";
    snprintf(buf, size, "Only %ld%s left", inventory, unit);
}

/* ------------------------------------------------------------------------------------------
 * The round
 * ------------------------------------------------------------------------------------------ */

/* Sends the price_alert of one row. Returns the connections reached, or -EPROTO with r->why
 * set when a number does not parse. */
static long send_alert(struct dw_monitor_round *r, const PGresult *res, int row)
{
    const char *user = PQgetvalue(res, row, COL_USER_ID);
    const char *deal = PQgetvalue(res, row, COL_DEAL_ID);
    const char *category = PQgetvalue(res, row, COL_CATEGORY);
    bool price_hit = PQgetvalue(res, row, COL_PRICE_HIT)[0] == 't';
    bool stock_hit = PQgetvalue(res, row, COL_STOCK_HIT)[0] == 't';
    bool no_threshold = PQgetisnull(res, row, COL_THRESHOLD); /* an inventory-only watch */
    char reason[2][96];
    const char *reasons[2];
    size_t n = 0;
    double price, threshold, inventory = 0;

    if (dw_store_parse_double(PQgetvalue(res, row, COL_PRICE), &price) < 0 ||
        (!no_threshold &&
         dw_store_parse_double(PQgetvalue(res, row, COL_THRESHOLD), &threshold) < 0) ||
        (stock_hit && dw_store_parse_double(PQgetvalue(res, row, COL_INVENTORY), &inventory) < 0)) {
        snprintf(r->why, sizeof(r->why), "watch of %.64s on deal %.64s: a number does not parse",
                 user, deal);
        return -EPROTO;
    }
    if (no_threshold)
        threshold = price;

    if (price_hit) {
        price_reason(reason[n], sizeof(reason[n]), price, threshold);
        reasons[n] = reason[n];
        n++;
    }
    if (stock_hit) {
        stock_reason(reason[n], sizeof(reason[n]), (long)inventory, category);
        reasons[n] = reason[n];
        n++;
    }
    /* An invalid user id (not one a client can connect as) reaches nobody: 0. */
    return (long)dw_events_price_alert(r->hub, user, deal, PQgetvalue(res, row, COL_TITLE), price,
                                       threshold, reasons, n);
}

int dw__monitor_watches(struct dw_monitor_round *r)
{
    char limit[16];
    const char *params[2] = {limit, r->node};
    unsigned long alerts = 0, reached = 0, batches = 0;
    PGresult *res;
    int rc = 0, n = 0;

    snprintf(limit, sizeof(limit), "%d", DW_MONITOR_WATCH_BATCH);
    do {
        int r2 = dw__monitor_exec(r, &res, watches_sql, 2, params);

        if (r2 < 0) {
            rc = r2;
            break;
        }
        batches++;
        if (PQnfields(res) != NCOLS) {
            snprintf(r->why, sizeof(r->why), "expected %d columns, got %d", NCOLS, PQnfields(res));
            PQclear(res);
            rc = -EPROTO;
            break;
        }
        n = PQntuples(res);
        dw_wake_batch_begin();
        for (int i = 0; i < n; i++) {
            long sent = send_alert(r, res, i);

            if (sent < 0) {
                rc = (int)sent;
                continue;
            }
            alerts++;
            reached += (unsigned long)sent;
        }
        dw_wake_batch_end();
        PQclear(res);
    } while (n == DW_MONITOR_WATCH_BATCH && !atomic_load(r->stopping));

    snprintf(r->summary, sizeof(r->summary), "%lu price alerts, %lu deliveries, %lu statements",
             alerts, reached, batches);
    return rc;
}
