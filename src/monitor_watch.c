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
 * critical message, written to the durable inbox (inbox.h) with the user's next seq in the
 * same transaction that records it in price_watch_alerts, and sent only once that committed.
 * A round that cannot write its alerts rolls back and records nothing: the next round finds
 * the same watches again.
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
#include "dealwire/inbox.h"
#include "dealwire/mem.h"
#include "dealwire/monitor.h"
#include "dealwire/store.h"
#include "dealwire/wake.h"
#include "monitor_int.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

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

/* Builds the price_alert of one row: a new object, or NULL with r->why set when a number does
 * not parse, or NULL when the row's values are not an alert a client could get (an invalid
 * user id reaches nobody). */
static struct json_object *alert_of(struct dw_monitor_round *r, const PGresult *res, int row)
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
        return NULL;
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
    return dw_events_price_alert_new(user, deal, PQgetvalue(res, row, COL_TITLE), price, threshold,
                                     reasons, n);
}

/* One statement's alerts, numbered and written to the inbox in its transaction. */
struct alerts {
    struct dw_monitor_round *r;
    struct dw_inbox_entry *entries;
    size_t n;
    bool bad_row; /* a row whose numbers did not parse (r->why says which) */
};

static void alerts_release(struct alerts *a)
{
    for (size_t i = 0; i < a->n; i++)
        dw_inbox_entry_release(&a->entries[i]);
    free(a->entries);
    a->entries = NULL;
    a->n = 0;
}

/* In the transaction that recorded them in price_watch_alerts: every alert goes to the inbox,
 * or the round rolls back and tries again next time. */
static int write_alerts(struct dw_store *st, PGresult *res, void *arg)
{
    struct alerts *a = arg;
    int rows;

    if (PQnfields(res) != NCOLS) {
        snprintf(a->r->why, sizeof(a->r->why), "expected %d columns, got %d", NCOLS,
                 PQnfields(res));
        return -EPROTO;
    }
    rows = PQntuples(res);
    a->entries = dw_xcalloc(rows ? (size_t)rows : 1, sizeof(*a->entries));
    for (int i = 0; i < rows; i++) {
        struct json_object *obj = alert_of(a->r, res, i);

        if (!obj) {
            a->bad_row = a->bad_row || a->r->why[0] != '\0';
            continue;
        }
        dw_inbox_entry_init(&a->entries[a->n++], PQgetvalue(res, i, COL_USER_ID),
                            DW_MSG_PRICE_ALERT, obj);
        json_object_put(obj);
    }
    return dw_inbox_write(st, a->entries, a->n);
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
        struct alerts a = {.r = r};
        int r2 = dw__monitor_exec_then(r, &res, watches_sql, 2, params, write_alerts, &a);

        if (r2 < 0) {
            alerts_release(&a); /* rolled back: nothing recorded, nothing sent */
            rc = r2;
            break;
        }
        batches++;
        n = PQntuples(res);
        PQclear(res);
        if (a.bad_row)
            rc = -EPROTO;
        /* Committed: recorded and in the inbox. Now sent, in one wake of the I/O thread. */
        dw_wake_batch_begin();
        for (size_t i = 0; i < a.n; i++)
            reached += dw_inbox_deliver(r->hub, &a.entries[i]);
        dw_wake_batch_end();
        alerts += a.n;
        alerts_release(&a);
    } while (n == DW_MONITOR_WATCH_BATCH && !atomic_load(r->stopping));

    snprintf(r->summary, sizeof(r->summary), "%lu price alerts, %lu deliveries, %lu statements",
             alerts, reached, batches);
    return rc;
}
