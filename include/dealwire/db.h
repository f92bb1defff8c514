/*
 * db — the daemon's database at run time (docs/operations.md, "Database"): the connection
 * string from --db, the readiness that /readyz reports, one store per worker thread, and the
 * keeper thread.
 *
 * The keeper brings the schema up to date at start-up (the embedded migrations, retried with
 * the store's backoff while the database is unreachable, so that the hub serves meanwhile),
 * loads the demo data when --load-demo-data asks for it, then probes the server every
 * DW_DB_PROBE_INTERVAL_S seconds so that readiness follows an outage even while no monitor
 * runs. A migration the server refuses is fatal: the keeper logs it and calls on_fatal, and
 * dw_db_failed() then says so (main stops the server and exits 1).
 *
 * Lifetime, in main: dw_db_new() before the server, dw_db_start() once it is running,
 * dw_db_stop() before the server is freed, dw_db_free() after (the workers, whose stores
 * report to the db, are stopped by dw_server_free()).
 */
#ifndef DEALWIRE_DB_H
#define DEALWIRE_DB_H

#include <stdbool.h>

struct dw_config;
struct dw_db;
struct dw_store;
struct dw_store_health;

/* Seconds between the keeper's probes while the database is up. */
#define DW_DB_PROBE_INTERVAL_S 5

/* Called once, on the keeper thread, when the schema cannot be brought up to date. */
typedef void dw_db_fatal_fn(void *arg);

/* thread: main. Creates the db for cfg->db (the connection string, copied) and
 * cfg->load_demo_data; nothing is connected yet. Returns NULL when cfg->db is NULL (no
 * database configured), or NULL after one line on stderr when cfg->db is not a connection
 * string libpq can parse (a bad setting: exit 2). */
struct dw_db *dw_db_new(const struct dw_config *cfg);

/* thread: main. Starts the keeper thread; on_fatal(arg) is its way to stop the daemon.
 * Returns 0, or -errno after a log line when the thread cannot be started. */
int dw_db_start(struct dw_db *db, dw_db_fatal_fn *on_fatal, void *arg);

/* thread: main. Asks the keeper to finish and joins it (a statement it is running finishes
 * first). Safe to call twice, or with NULL or a db never started. */
void dw_db_stop(struct dw_db *db);

/* thread: main, once every thread that called dw_db_store() has exited. Frees db (NULL is a
 * no-op). */
void dw_db_free(struct dw_db *db);

/* thread: worker. The calling thread's own store for db: created by the first call on each
 * thread (the connection opens on first use), closed when the thread exits. Returns a
 * borrowed pointer valid until then. */
struct dw_store *dw_db_store(struct dw_db *db);

/* thread: any. The readiness of the database (see store.h). Borrowed for db's lifetime. */
struct dw_store_health *dw_db_health(struct dw_db *db);

/* thread: any. Did the keeper give up on the schema (a migration or the demo data load was
 * refused)? */
bool dw_db_failed(const struct dw_db *db);

#endif
