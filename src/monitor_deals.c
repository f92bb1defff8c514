/*
 * monitor_deals — DESIGN: the hot-deal and trending rounds (monitor.h). Each is one SQL
 * statement whose rows are the deals to announce, followed by one deal_alert per row to
 * every connection, inside one hub batch (one wake of the I/O thread per round).
 *
 * The one idea, for "each hot deal announced once": the statement that selects the hot deals
 * also records them, INSERT ... ON CONFLICT DO NOTHING RETURNING in a CTE, and only the rows
 * it returns are announced. Two rounds racing for the same deal, on this node or another, meet
 * on hot_deal_announcements' primary key: the second waits for the first to commit and then
 * inserts nothing, so it announces nothing. A crash between the commit and the send loses
 * that announcement rather than repeating it (deal_alert is not a critical message).
 *
 * The hot-deal rule is computed exactly on the stored prices (discount * 100 > 30 *
 * original_price), not on the rounded savings_percent column, so 30.04 % is not "over 30 %".
 *
 * The demo market simulator's tick (demo.h) is here as a round too: it is not a monitor, but
 * it is scheduled, checked and logged like one (monitor.c).
 *
 * Runs on workers only (see monitor_int.h).
 */
#define DW_LOG_MODULE "monitor"
#include "dealwire/demo.h"
#include "dealwire/events.h"
#include "dealwire/hub.h"
#include "dealwire/monitor.h"
#include "dealwire/store.h"
#include "dealwire/wake.h"
#include "monitor_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

/* $1 node, $2 how many at most. Deals created in the last hour with savings over 30 % or a
 * discount over 200 $, not announced yet, oldest first; recorded and returned in one go. */
static const char hot_deals_sql[] =
    "WITH hot AS ("
    "  SELECT d.id FROM deals d"
    "  WHERE d.created_at > now() - interval '1 hour'"
    "   AND (d.discount > 200 OR d.discount * 100 > 30 * d.original_price)"
    "   AND NOT EXISTS (SELECT 1 FROM hot_deal_announcements a WHERE a.deal_id = d.id)"
    "  ORDER BY d.created_at, d.id"
    "  LIMIT $2::integer),"
    " claimed AS ("
    "  INSERT INTO hot_deal_announcements (deal_id, node)"
    "  SELECT id, $1::text FROM hot"
    "  ON CONFLICT (deal_id) DO NOTHING"
    "  RETURNING deal_id)"
    " SELECT d.id, d.title, d.category, d.price, d.original_price, d.metadata::text"
    " FROM claimed c JOIN deals d ON d.id = c.deal_id"
    " ORDER BY d.created_at, d.id";

/* $1 the fewest active watches, $2 how many deals at most. The most watched first. */
static const char trending_sql[] =
    "SELECT d.id, d.title, d.category, d.price, d.original_price, d.metadata::text"
    " FROM (SELECT deal_id, count(*) AS watchers FROM price_watches WHERE active"
    "       GROUP BY deal_id HAVING count(*) >= $1::integer) w"
    " JOIN deals d ON d.id = w.deal_id"
    " ORDER BY w.watchers DESC, d.id"
    " LIMIT $2::integer";

/* The columns both statements return, in this order. */
enum { COL_ID, COL_TITLE, COL_CATEGORY, COL_PRICE, COL_ORIGINAL_PRICE, COL_METADATA, NCOLS };

/* Fills deal from row (strings borrowed from res; deal->metadata a new reference, or NULL,
 * which the caller puts). Returns 0, or -EPROTO with r->why set. */
static int deal_from_row(struct dw_monitor_round *r, const PGresult *res, int row,
                         struct dw_deal *deal)
{
    const char *price = PQgetvalue(res, row, COL_PRICE);
    const char *original = PQgetvalue(res, row, COL_ORIGINAL_PRICE);

    memset(deal, 0, sizeof(*deal));
    deal->deal_id = PQgetvalue(res, row, COL_ID);
    deal->title = PQgetvalue(res, row, COL_TITLE);
    deal->category = PQgetvalue(res, row, COL_CATEGORY);
    if (dw_store_parse_double(price, &deal->price) < 0 ||
        (!PQgetisnull(res, row, COL_ORIGINAL_PRICE) &&
         dw_store_parse_double(original, &deal->original_price) < 0)) {
        snprintf(r->why, sizeof(r->why), "deal %.64s: price \"%.32s\" or original price \"%.32s\"",
                 deal->deal_id, price, original);
        return -EPROTO;
    }
    /* jsonb prints valid JSON; anything but an object is left out of the message. */
    deal->metadata = json_tokener_parse(PQgetvalue(res, row, COL_METADATA));
    if (deal->metadata && !json_object_is_type(deal->metadata, json_type_object)) {
        json_object_put(deal->metadata);
        deal->metadata = NULL;
    }
    return 0;
}

/* Runs sql and sends a deal_alert of alert_type to everyone for each row. Returns what the
 * round returns; *ndeals and *reached say how many deals and deliveries. */
static int announce(struct dw_monitor_round *r, const char *sql, const char *const params[2],
                    const char *alert_type, int *ndeals, size_t *reached)
{
    static const struct dw_target all = {DW_TARGET_ALL, NULL};
    PGresult *res;
    int rc, n;

    *ndeals = 0;
    *reached = 0;
    rc = dw__monitor_exec(r, &res, sql, 2, params);
    if (rc < 0)
        return rc;
    if (PQnfields(res) != NCOLS) {
        snprintf(r->why, sizeof(r->why), "expected %d columns, got %d", NCOLS, PQnfields(res));
        PQclear(res);
        return -EPROTO;
    }
    n = PQntuples(res);
    dw_wake_batch_begin();
    for (int i = 0; i < n; i++) {
        struct dw_deal deal;

        if (deal_from_row(r, res, i, &deal) < 0) {
            rc = -EPROTO;
            continue;
        }
        *reached += dw_events_deal_alert(r->hub, &all, &deal, alert_type);
        json_object_put(deal.metadata);
        ++*ndeals;
    }
    dw_wake_batch_end();
    PQclear(res);
    return rc;
}

int dw__monitor_hot_deals(struct dw_monitor_round *r)
{
    char limit[16];
    const char *params[2] = {r->node, limit};
    size_t reached;
    int n, rc;

    snprintf(limit, sizeof(limit), "%d", DW_MONITOR_HOT_DEALS_MAX);
    rc = announce(r, hot_deals_sql, params, DW_DEAL_ALERT_HOT_DEAL, &n, &reached);
    snprintf(r->summary, sizeof(r->summary), "%d hot deals announced, %zu deliveries", n, reached);
    return rc;
}

int dw__monitor_trending(struct dw_monitor_round *r)
{
    char min[16], limit[16];
    const char *params[2] = {min, limit};
    size_t reached;
    int n, rc;

    snprintf(min, sizeof(min), "%d", DW_MONITOR_TRENDING_MIN_WATCHES);
    snprintf(limit, sizeof(limit), "%d", DW_MONITOR_TRENDING_MAX);
    rc = announce(r, trending_sql, params, DW_DEAL_ALERT_TRENDING, &n, &reached);
    snprintf(r->summary, sizeof(r->summary), "%d trending deals, %zu deliveries", n, reached);
    return rc;
}

/* The simulator's tick takes a round's place, so that it runs when the monitors do (someone
 * connected, schema ready) and fails, skips and logs the way they do. What it adds and moves,
 * the next hot-deal and price-watch rounds announce. */
int dw__monitor_demo_activity(struct dw_monitor_round *r)
{
    struct dw_demo_moves mv;
    char moved[112] = "no demo watch to go under";
    int rc = dw_demo_simulate(r->st, &mv);

    if (rc < 0) {
        if (rc == -EIO)
            snprintf(r->why, sizeof(r->why), "%s: %s", mv.step ? mv.step : "?",
                     dw_store_error(r->st));
        return rc;
    }
    if (mv.dropped[0])
        snprintf(moved, sizeof(moved), "%.24s %.13s -> %.13s under %.24s's %.13s", mv.dropped,
                 mv.old_price, mv.new_price, mv.watcher, mv.threshold);
    snprintf(r->summary, sizeof(r->summary),
             "added %.24s (%.8s %% off); %s; %.24s back up; %ld pruned",
             mv.added[0] ? mv.added : "no deal", mv.added_off, moved,
             mv.raised[0] ? mv.raised : "nothing", mv.pruned);
    return 0;
}
