/*
 * demo — a realistic data set for demos and benchmarks, loaded by `dealwire --db URL
 * --load-demo-data` once the schema is up to date: thousands of deals created over the last
 * three days (so the hot-deal monitor finds some from the last hour), flights between a dozen
 * cities for the next two weeks, hotels in each city, and price watches by demo users, some
 * deals watched by many (trending). The dashboard's default user, DW_DEMO_USER, always has
 * watches of its own, a few of them met from the start, so a fresh demo shows price alerts.
 *
 * Rows have fixed ids ("demo-deal-00001", "demo-flight-nyc-par-d03-1", "demo-hotel-par-07")
 * and are inserted with ON CONFLICT DO NOTHING; the watches are added only while no demo user
 * has one (DW_DEMO_USER's: only on deals it does not watch yet). So loading again, or from
 * two nodes at once, adds nothing.
 *
 * The market simulator (--demo-activity SECONDS, a timer beside the monitors, monitor.h) keeps
 * a demo lively: each tick adds one hot deal and moves one watched demo deal's price under a
 * watch's threshold, so the monitors have something new to announce. It only ever changes or
 * deletes deals whose id starts with DW_DEMO_DEAL_PREFIX; it is for demo databases, never a
 * production one (config.c refuses it without --load-demo-data).
 */
#ifndef DEALWIRE_DEMO_H
#define DEALWIRE_DEMO_H

struct dw_store;

/* The size of the data set. */
#define DW_DEMO_DEALS           5000 /* deals */
#define DW_DEMO_FLIGHT_DAYS     14   /* flights on every route for this many days ahead */
#define DW_DEMO_FLIGHTS_PER_DAY 2    /* per route and day; 12 cities: 132 routes */
#define DW_DEMO_HOTELS_PER_CITY 25   /* hotels in each city */
#define DW_DEMO_WATCHES         1500 /* price watches */
#define DW_DEMO_USERS           300  /* demo-user-001 .. demo-user-300 */

/* The id prefixes of the demo rows; the simulator's SQL checks them on every row it changes. */
#define DW_DEMO_DEAL_PREFIX "demo-deal-"     /* every demo deal, the simulated ones included */
#define DW_DEMO_SIM_PREFIX  "demo-deal-sim-" /* the simulator's deals: demo-deal-sim-0000001 */
#define DW_DEMO_USER_PREFIX "demo-user-"     /* the demo users */

/* The dashboard's default user (web/dashboard.js). Of the DW_DEMO_WATCHES watches, it owns
 * DW_DEMO_USER_WATCHES, one on the first deal (by id) of each of the five categories: met at
 * load time for the flight, the hotel and the package (a threshold 10 % over the price), not
 * yet for the car and the activity (10 % under). The random watches go to the other users. */
#define DW_DEMO_USER         "demo-user-001"
#define DW_DEMO_USER_WATCHES 5

/* The simulator's deals kept at most: past it, each tick deletes the oldest simulated ones
 * (about 42 hours of deals at one every 15 s). */
#define DW_DEMO_SIM_DEALS_MAX 10000

/* Rows one load inserted, per table. */
struct dw_demo_counts {
    long deals, flights, hotels, watches;
};

/* thread: worker (st's owner); blocks on the database. Loads the data set in one transaction,
 * under an advisory lock, and logs one line saying what it added. Returns 0 and fills *added
 * (may be NULL), -EAGAIN when the database is unavailable (nothing was added; try again), or
 * -EIO after a log line when the server refused a statement. */
int dw_demo_load(struct dw_store *st, struct dw_demo_counts *added);

/* What one tick of the simulator did, for its log line; strings as the database printed them,
 * "" for a step that found nothing to do. */
struct dw_demo_moves {
    char added[64];     /* the new deal's id ("" if another node's tick took its number) */
    char added_off[16]; /* its savings_percent, e.g. "42.5" */
    char dropped[64];   /* the deal whose price went under a threshold ("" if no watch has one) */
    char old_price[24]; /* its price before ... */
    char new_price[24]; /* ... and after */
    char watcher[64];   /* the user of the watch it went under */
    char threshold[24]; /* that watch's threshold */
    char raised[64];    /* the deal that went back over a threshold of watcher's ("" if none) */
    long pruned;        /* simulated deals deleted to stay at DW_DEMO_SIM_DEALS_MAX */
    const char *step;   /* the statement that failed, for the error line; NULL if none */
};

/* thread: worker (st's owner); blocks on the database. One tick of the market simulator, in
 * one transaction under the loader's advisory lock (so a tick waits for a load in progress,
 * and ticks on several nodes take turns):
 *   - inserts one hot deal: created now, savings 31-60 %, id DW_DEMO_SIM_PREFIX and a number;
 *   - drops the price of one watched demo deal to 1-10 % under the threshold of one of its
 *     watches: one of DW_DEMO_USER's if it has any, else any demo user's, and one that is not
 *     met yet where there is one, so that the price really falls through the threshold; the
 *     price-watch monitor alerts it in its next round. (Where every watch is met, it is a new
 *     price under the threshold, which alerts as well.)
 *   - raises one other deal under a met watch of the same user 2-10 % over that threshold, so
 *     that the next tick has a watch to meet: prices go both ways, and stay near the thresholds;
 *   - deletes the oldest simulated deals past DW_DEMO_SIM_DEALS_MAX.
 * Only deals whose id starts with DW_DEMO_DEAL_PREFIX are changed or deleted, and only demo
 * users' watches are read. Returns 0 and fills *out, or -EAGAIN (database unavailable) / -EIO
 * (see store.h; out->step names the statement), with nothing changed. */
int dw_demo_simulate(struct dw_store *st, struct dw_demo_moves *out);

#endif
