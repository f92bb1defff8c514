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

/* The dashboard's default user (web/dashboard.js). Of the DW_DEMO_WATCHES watches, it owns
 * DW_DEMO_USER_WATCHES, one on the first deal (by id) of each of the five categories: met at
 * load time for the flight, the hotel and the package (a threshold 10 % over the price), not
 * yet for the car and the activity (10 % under). The random watches go to the other users. */
#define DW_DEMO_USER         "demo-user-001"
#define DW_DEMO_USER_WATCHES 5

/* Rows one load inserted, per table. */
struct dw_demo_counts {
    long deals, flights, hotels, watches;
};

/* thread: worker (st's owner); blocks on the database. Loads the data set in one transaction,
 * under an advisory lock, and logs one line saying what it added. Returns 0 and fills *added
 * (may be NULL), -EAGAIN when the database is unavailable (nothing was added; try again), or
 * -EIO after a log line when the server refused a statement. */
int dw_demo_load(struct dw_store *st, struct dw_demo_counts *added);

#endif
