/*
 * demo — DESIGN: the data is made by the server, not here: each table is one INSERT ...
 * SELECT over generate_series(), with random() for the variety (drawn once per row in a
 * MATERIALIZED CTE, so that the values that go together are drawn together), and fixed ids so
 * that ON CONFLICT DO NOTHING makes a second load a no-op. The sizes are parameters ($1, ...),
 * like every value dealwire sends. DW_DEMO_USER's watches are the one part that is not drawn:
 * the dashboard's default user must have price alerts whatever the draw.
 *
 * The cities are the same twelve codes in flights and hotels (see sql/002_travel.sql), so
 * the planner can join a route to its destination's hotels.
 *
 * The market simulator makes its deals with the loader's own SQL (DEAL_SQL below), one row
 * at a time. Every row it changes or deletes is named by the statement's own WHERE
 * on the id prefix (starts_with, which has no wildcards to escape), not by what an earlier
 * statement returned, so that no other row can be reached whatever the data holds.
 */
#define DW_LOG_MODULE "demo"
#include "dealwire/demo.h"
#include "dealwire/log.h"
#include "dealwire/store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The advisory lock a loader holds for its transaction ("dwdemoda" in ASCII). */
#define DEMO_LOCK_SQL "SELECT pg_advisory_xact_lock(7239365312811852897)"

#define CITIES                                                                                     \
    "cities AS (SELECT"                                                                            \
    " ARRAY['NYC','LON','PAR','TYO','ROM','BCN','BER','AMS','LIS','DXB','SIN','SFO'] AS code,"     \
    " ARRAY['New York','London','Paris','Tokyo','Rome','Barcelona','Berlin','Amsterdam',"          \
    "'Lisbon','Dubai','Singapore','San Francisco'] AS name)"

/* An INSERT INTO deals ... SELECT of one deal per row of from (a FROM item with a column i).
 * Each row draws its category, cities, price, title words and provider; cut is an SQL
 * expression of the draw g, the discount as a fraction of the original price (NULL: no
 * original price); id and created_at are SQL expressions; tail follows ON CONFLICT. */
#define DEAL_SQL(from, cut, id, created_at, tail)                                                  \
    "WITH " CITIES ","                                                                             \
    " r AS MATERIALIZED (SELECT i, random() AS a, random() AS b, random() AS k, random() AS d,"    \
    "  random() AS e, random() AS g, random() AS h, random() AS t, random() AS s"                  \
    "  FROM " from "),"                                                                            \
    " v AS (SELECT r.*, 1 + floor(b * 12)::integer AS o,"                                          \
    "  1 + (floor(b * 12)::integer + 1 + floor(k * 11)::integer) % 12 AS x,"                       \
    "  CASE WHEN a < 0.40 THEN 'flight' WHEN a < 0.70 THEN 'hotel' WHEN a < 0.85 THEN 'package'"   \
    "   WHEN a < 0.93 THEN 'car' ELSE 'activity' END AS category FROM r),"                         \
    " p AS (SELECT v.*, round((CASE category WHEN 'flight' THEN 79 + d * 1300"                     \
    "   WHEN 'hotel' THEN 59 + d * 900 WHEN 'package' THEN 399 + d * 2600"                         \
    "   WHEN 'car' THEN 25 + d * 300 ELSE 15 + d * 250 END)::numeric, 0) - 0.01 AS price,"         \
    "  " cut " AS cut FROM v)"                                                                     \
    " INSERT INTO deals (id, title, category, price, original_price, inventory, metadata,"         \
    "  created_at)"                                                                                \
    " SELECT " id ","                                                                              \
    "  CASE category"                                                                              \
    "   WHEN 'flight' THEN c.name[o] || ' to ' || c.name[x] ||"                                    \
    "    CASE WHEN e < 0.6 THEN ', round trip' ELSE ', one way' END"                               \
    "   WHEN 'hotel' THEN (ARRAY['Grand','Royal','Harbor','Park','Central','Garden'])"             \
    "    [1 + floor(e * 6)::integer] || ' Hotel ' || c.name[x] || ', '"                            \
    "    || (2 + floor(h * 5)::integer) || ' nights'"                                              \
    "   WHEN 'package' THEN c.name[x] || ' getaway: flight from ' || c.name[o] || ' + '"           \
    "    || (3 + floor(h * 5)::integer) || ' nights'"                                              \
    "   WHEN 'car' THEN 'Car rental in ' || c.name[x] || ', ' || (2 + floor(h * 6)::integer)"      \
    "    || ' days'"                                                                               \
    "   ELSE (ARRAY['Food tour','Museum pass','Day trip','Boat cruise','Old town walk'])"          \
    "    [1 + floor(e * 5)::integer] || ' in ' || c.name[x]"                                       \
    "  END,"                                                                                       \
    "  category, price,"                                                                           \
    "  CASE WHEN cut IS NULL THEN NULL ELSE round(price / (1 - cut), 2) END,"                      \
    "  floor(h * 60)::integer,"                                                                    \
    "  jsonb_build_object('origin', c.code[o], 'destination', c.code[x], 'provider',"              \
    "   (ARRAY['SkyHop','TravelNest','FareFox','StayWise','JetPort'])[1 + floor(t * 5)::integer]," \
    "   'demo', true),"                                                                            \
    "  " created_at " FROM p, cities AS c"                                                         \
    " ON CONFLICT (id) DO NOTHING" tail

/* $1: how many deals. Titles, prices and discounts by category; a third of the deals have no
 * original price, the others a cut of 0..60 %; created over the last 72 hours. */
static const char deals_sql[] =
    DEAL_SQL("generate_series(1, $1::integer) AS i",
             "CASE WHEN g < 0.3 THEN NULL ELSE ((g - 0.3) / 0.7 * 0.6)::numeric END",
             "'demo-deal-' || lpad(i::text, 5, '0')", "now() - s * interval '72 hours'", "");

/* $1: days ahead, $2: flights per route and day. Durations are symmetric per city pair;
 * stops make a flight longer and cheaper. */
static const char flights_sql[] =
    "WITH " CITIES ","
    " r AS MATERIALIZED (SELECT o, x, day, k, random() AS a, random() AS b, random() AS d,"
    "  random() AS e, floor(random() * 180)::integer AS seats"
    "  FROM generate_series(1, 12) AS o, generate_series(1, 12) AS x,"
    "   generate_series(0, $1::integer - 1) AS day, generate_series(1, $2::integer) AS k"
    "  WHERE o <> x),"
    " v AS (SELECT r.*, 1.5 + ((o * x + o + x) % 11) * 1.1 AS hours,"
    "  CASE WHEN a < 0.65 THEN 0 WHEN a < 0.92 THEN 1 ELSE 2 END AS stops,"
    "  date_trunc('day', now()) + make_interval(days => day + 1) + interval '6 hours'"
    "   + (k - 1) * interval '8 hours' + floor(b * 24) * interval '15 minutes' AS depart"
    "  FROM r)"
    " INSERT INTO flights (id, origin, destination, depart_at, arrive_at, price, airline,"
    "  stops, seats_left)"
    " SELECT 'demo-flight-' || lower(c.code[o]) || '-' || lower(c.code[x]) || '-d'"
    "   || lpad(day::text, 2, '0') || '-' || k,"
    "  c.code[o], c.code[x], depart,"
    "  depart + make_interval(mins => ((hours + stops * 1.5) * 60)::integer),"
    "  round((55 + hours * 42 * (0.75 + d * 0.8)"
    "   * CASE stops WHEN 0 THEN 1.0 WHEN 1 THEN 0.82 ELSE 0.7 END)::numeric, 0) - 0.01,"
    "  (ARRAY['Aerolux','Northwind Air','Bluejet','Sunline','Transpolar','Coastal Airways'])"
    "   [1 + floor(e * 6)::integer],"
    "  stops, seats"
    " FROM v, cities AS c"
    " ON CONFLICT (id) DO NOTHING";

/* $1: hotels per city. The price follows the rating. */
static const char hotels_sql[] =
    "WITH " CITIES ","
    " r AS MATERIALIZED (SELECT ci, j, random() AS a, random() AS b, random() AS d,"
    "  round((2.5 + random() * 2.5)::numeric, 1) AS rating,"
    "  floor(random() * 40)::integer AS rooms"
    "  FROM generate_series(1, 12) AS ci, generate_series(1, $1::integer) AS j)"
    " INSERT INTO hotels (id, city, name, price_per_night, rating, rooms_left)"
    " SELECT 'demo-hotel-' || lower(c.code[ci]) || '-' || lpad(j::text, 2, '0'), c.code[ci],"
    "  (ARRAY['Grand','Royal','Harbor','Park','Central','Garden','Plaza','Riverside',"
    "   'Old Town','Station'])[1 + floor(a * 10)::integer] || ' '"
    "   || (ARRAY['Hotel','Suites','Inn','Residence','Lodge','House'])[1 + floor(b * 6)::integer]"
    "   || ' ' || c.name[ci],"
    "  round((40 + rating * rating * 14 + d * 60)::numeric, 0) - 0.01, rating, rooms"
    " FROM r, cities AS c"
    " ON CONFLICT (id) DO NOTHING";

/* $1: watches, $2: users, $3: deals. Deals are picked with a skew toward the first ones
 * (cube of a uniform draw), so a few dozen deals have several watchers (the trending
 * monitor's case); thresholds fall around the price, so some are already met. The users are
 * demo-user-002 and up: demo-user-001 gets the watches of user_watches_sql instead. */
static const char watches_sql[] =
    "WITH r AS MATERIALIZED (SELECT i, random() AS a, random() AS b, random() AS d,"
    "  random() AS e FROM generate_series(1, $1::integer) AS i)"
    " INSERT INTO price_watches (user_id, deal_id, threshold_price, inventory_threshold)"
    " SELECT 'demo-user-' || lpad((2 + floor(a * ($2::integer - 1)))::text, 3, '0'), deals.id,"
    "  round(deals.price * (0.85 + d * 0.2)::numeric, 2), CASE WHEN e < 0.3 THEN 5 END"
    " FROM r JOIN deals"
    "  ON deals.id = 'demo-deal-' || lpad((1 + floor(power(b, 3) * $3::integer))::text, 5, '0')"
    " WHERE NOT EXISTS (SELECT 1 FROM price_watches WHERE user_id LIKE 'demo-user-%')";

/* $1: the user (DW_DEMO_USER). One watch on the first loaded deal of each category, met for
 * flights, hotels and packages (10 % over the price, rounded up to whole dollars), not for the
 * rest (10 % under, rounded down). Only on deals the user does not watch yet: a second load
 * adds nothing, and a database loaded before these watches existed gets them. */
static const char user_watches_sql[] =
    "INSERT INTO price_watches (user_id, deal_id, threshold_price)"
    " SELECT $1::text, d.id,"
    "  CASE WHEN d.category IN ('flight', 'hotel', 'package') THEN ceil(d.price * 1.1)"
    "   ELSE floor(d.price * 0.9) END"
    " FROM (SELECT DISTINCT ON (category) id, category, price FROM deals"
    "  WHERE id ~ '^demo-deal-[0-9]{5}$' ORDER BY category, id) AS d"
    " WHERE NOT EXISTS (SELECT 1 FROM price_watches w WHERE w.user_id = $1::text"
    "  AND w.deal_id = d.id)"
    " ORDER BY d.id";

struct load {
    struct dw_demo_counts added;
    const char *step; /* the table being filled, for the error line */
};

static int insert(struct dw_store *st, struct load *ld, const char *table, const char *sql,
                  int nparams, const char *const *params, long *count)
{
    PGresult *res;
    long long n;
    int r;

    ld->step = table;
    r = dw_store_exec(st, &res, sql, nparams, params);
    if (r < 0)
        return r;
    r = dw_store_parse_int(PQcmdTuples(res), 0, LONG_MAX, &n);
    PQclear(res);
    if (r < 0)
        return -EPROTO;
    *count = (long)n;
    return 0;
}

static int load_all(struct dw_store *st, void *arg)
{
    struct load *ld = arg;
    char deals[16], days[16], per_day[16], hotels[16], watches[16], users[16];
    long mine = 0;
    int r;

    snprintf(deals, sizeof(deals), "%d", DW_DEMO_DEALS);
    snprintf(days, sizeof(days), "%d", DW_DEMO_FLIGHT_DAYS);
    snprintf(per_day, sizeof(per_day), "%d", DW_DEMO_FLIGHTS_PER_DAY);
    snprintf(hotels, sizeof(hotels), "%d", DW_DEMO_HOTELS_PER_CITY);
    snprintf(watches, sizeof(watches), "%d", DW_DEMO_WATCHES - DW_DEMO_USER_WATCHES);
    snprintf(users, sizeof(users), "%d", DW_DEMO_USERS);

    ld->step = "lock";
    r = dw_store_run(st, DEMO_LOCK_SQL, 0, NULL);
    if (r == 0)
        r = insert(st, ld, "deals", deals_sql, 1, (const char *const[]){deals}, &ld->added.deals);
    if (r == 0)
        r = insert(st, ld, "flights", flights_sql, 2, (const char *const[]){days, per_day},
                   &ld->added.flights);
    if (r == 0)
        r = insert(st, ld, "hotels", hotels_sql, 1, (const char *const[]){hotels},
                   &ld->added.hotels);
    if (r == 0)
        r = insert(st, ld, "price_watches", watches_sql, 3,
                   (const char *const[]){watches, users, deals}, &ld->added.watches);
    if (r == 0)
        r = insert(st, ld, "price_watches", user_watches_sql, 1,
                   (const char *const[]){DW_DEMO_USER}, &mine);
    ld->added.watches += mine;
    return r;
}

int dw_demo_load(struct dw_store *st, struct dw_demo_counts *added)
{
    struct load ld;
    int r;

    if (!st)
        return -EINVAL;
    memset(&ld, 0, sizeof(ld));
    r = dw_store_tx(st, load_all, &ld);
    if (r == -EIO)
        dw_log(DW_LOG_ERROR, "loading demo data (%s) failed: %s", ld.step, dw_store_error(st));
    if (r < 0)
        return r;
    if (ld.added.deals + ld.added.flights + ld.added.hotels + ld.added.watches == 0)
        dw_log(DW_LOG_INFO, "demo data already loaded");
    else
        dw_log(DW_LOG_INFO, "demo data loaded: %ld deals, %ld flights, %ld hotels, %ld watches",
               ld.added.deals, ld.added.flights, ld.added.hotels, ld.added.watches);
    if (added)
        *added = ld.added;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * The market simulator
 * ------------------------------------------------------------------------------------------ */

/* $1: the simulated deals' id prefix. One hot deal created now, with a cut of 31..60 %
 * (savings over 30 % once the original price is rounded to cents), numbered after the highest
 * simulated deal. */
static const char sim_deal_sql[] =
    DEAL_SQL("(SELECT coalesce(max(substr(id, length($1::text) + 1)::bigint), 0) + 1 AS i"
             "  FROM deals WHERE starts_with(id, $1::text)"
             "   AND substr(id, length($1::text) + 1) ~ '^[0-9]{1,15}$') AS n",
             "(0.31 + g * 0.29)::numeric", "$1::text || lpad(i::text, 7, '0')", "now()",
             " RETURNING id, savings_percent");

/* $1: the demo deals' id prefix, $2: the demo users' prefix, $3: the user served first. Each
 * candidate watch draws a target 1..10 % under its threshold; the pick is $3's first, then a
 * watch not met yet (its price falls through the threshold), else any. The UPDATE checks the
 * prefix of the row it changes itself, whatever the pick. */
static const char sim_drop_sql[] =
    "WITH w AS MATERIALIZED ("
    "  SELECT w.user_id, w.deal_id, w.threshold_price, d.price,"
    "   round(w.threshold_price * (0.90 + 0.09 * random())::numeric, 2) AS target"
    "  FROM price_watches w JOIN deals d ON d.id = w.deal_id"
    "  WHERE w.active AND w.threshold_price IS NOT NULL"
    "   AND starts_with(w.deal_id, $1::text) AND starts_with(w.user_id, $2::text)),"
    " pick AS ("
    "  SELECT * FROM w"
    "  WHERE target > 0 AND target < threshold_price AND target <> price"
    "  ORDER BY user_id = $3::text DESC, price > threshold_price DESC, random()"
    "  LIMIT 1)"
    " UPDATE deals AS d SET price = pick.target FROM pick"
    " WHERE d.id = pick.deal_id AND starts_with(d.id, $1::text)"
    " RETURNING d.id, pick.price, d.price, pick.user_id, pick.threshold_price";

/* $1: the demo deals' id prefix, $2: the user whose watch the drop went under, $3: that deal.
 * The market goes both ways: one other deal under a met watch of $2 goes back up, 2..10 % over
 * the threshold, so that $2 always has watches for a later drop to meet (a watch no longer
 * met forgets its last alert, and alerts again when it is met again). */
static const char sim_rise_sql[] =
    "WITH pick AS ("
    "  SELECT w.deal_id,"
    "   round(w.threshold_price * (1.02 + 0.08 * random())::numeric, 2) AS target"
    "  FROM price_watches w JOIN deals d ON d.id = w.deal_id"
    "  WHERE w.active AND w.user_id = $2::text AND w.deal_id <> $3::text"
    "   AND d.price <= w.threshold_price AND starts_with(w.deal_id, $1::text)"
    "  ORDER BY random() LIMIT 1)"
    " UPDATE deals AS d SET price = pick.target FROM pick"
    " WHERE d.id = pick.deal_id AND starts_with(d.id, $1::text)"
    " RETURNING d.id";

/* $1: the simulated deals' id prefix, $2: how many to keep. The oldest go first (their
 * announcements and any watches on them with them: ON DELETE CASCADE). */
static const char sim_prune_sql[] =
    "DELETE FROM deals"
    " WHERE id IN (SELECT id FROM deals WHERE starts_with(id, $1::text)"
    "  ORDER BY created_at DESC, id DESC OFFSET $2::integer)";

/* Where a value of a statement's first row goes. */
struct column {
    char *buf;
    size_t size;
};

/* Runs one statement of the tick, named for the error line (mv->step), and copies its first
 * row's values, when it returned one, into cols[0..ncols). Returns the rows it inserted,
 * updated or deleted, or what dw_store_exec() returned. */
static long run_step(struct dw_store *st, struct dw_demo_moves *mv, const char *name,
                     const char *sql, int nparams, const char *const *params,
                     const struct column *cols, int ncols)
{
    PGresult *res;
    long long n;
    int r;

    mv->step = name;
    r = dw_store_exec(st, &res, sql, nparams, params);
    if (r < 0)
        return r;
    for (int i = 0; i < ncols && PQntuples(res) > 0 && i < PQnfields(res); i++)
        snprintf(cols[i].buf, cols[i].size, "%s", PQgetvalue(res, 0, i));
    r = dw_store_parse_int(PQcmdTuples(res), 0, LONG_MAX, &n);
    PQclear(res);
    return r < 0 ? -EPROTO : (long)n;
}

#define NCOLS(cols) ((int)(sizeof(cols) / sizeof((cols)[0])))

static int simulate_all(struct dw_store *st, void *arg)
{
    struct dw_demo_moves *mv = arg;
    const char *drop[] = {DW_DEMO_DEAL_PREFIX, DW_DEMO_USER_PREFIX, DW_DEMO_USER};
    const char *rise[] = {DW_DEMO_DEAL_PREFIX, mv->watcher, mv->dropped};
    const char *sim[] = {DW_DEMO_SIM_PREFIX, NULL};
    const struct column added[] = {{mv->added, sizeof(mv->added)},
                                   {mv->added_off, sizeof(mv->added_off)}};
    const struct column dropped[] = {{mv->dropped, sizeof(mv->dropped)},
                                     {mv->old_price, sizeof(mv->old_price)},
                                     {mv->new_price, sizeof(mv->new_price)},
                                     {mv->watcher, sizeof(mv->watcher)},
                                     {mv->threshold, sizeof(mv->threshold)}};
    const struct column raised[] = {{mv->raised, sizeof(mv->raised)}};
    char keep[16];
    long r;

    snprintf(keep, sizeof(keep), "%d", DW_DEMO_SIM_DEALS_MAX);
    sim[1] = keep;
    r = run_step(st, mv, "lock", DEMO_LOCK_SQL, 0, NULL, NULL, 0);
    if (r >= 0)
        r = run_step(st, mv, "new deal", sim_deal_sql, 1, sim, added, NCOLS(added));
    if (r >= 0)
        r = run_step(st, mv, "price drop", sim_drop_sql, 3, drop, dropped, NCOLS(dropped));
    if (r >= 0 && mv->dropped[0])
        r = run_step(st, mv, "price rise", sim_rise_sql, 3, rise, raised, NCOLS(raised));
    if (r >= 0)
        r = run_step(st, mv, "prune", sim_prune_sql, 2, sim, NULL, 0);
    if (r < 0)
        return (int)r;
    mv->pruned = r;
    mv->step = "commit";
    return 0;
}

int dw_demo_simulate(struct dw_store *st, struct dw_demo_moves *out)
{
    int r;

    if (!st || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    r = dw_store_tx(st, simulate_all, out);
    if (r < 0) {
        /* Rolled back: what the statements returned did not happen. */
        const char *step = out->step;

        memset(out, 0, sizeof(*out));
        out->step = step;
        return r;
    }
    out->step = NULL;
    return 0;
}
