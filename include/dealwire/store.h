/*
 * store — PostgreSQL through libpq: one connection per worker thread, opened lazily on first
 * use, reopened with backoff after a failure, and a readiness state that any thread can read
 * (for /readyz).
 *
 * A struct dw_store is one connection and belongs to the thread that uses it (a worker; see
 * dw_db_store() in db.h for "the calling worker's store"). Every statement with a value in it
 * goes through dw_store_exec(), which sends the values as parameters ($1, $2, ... through
 * PQexecParams), never spliced into the SQL text.
 *
 * Failures come in two kinds, and callers treat them differently:
 *   -EAGAIN  the database is not available right now: not connected and still backing off
 *            (nothing was sent), the connection failed or was lost during the call, or the
 *            server answered with a transient error (shutting down, too many connections,
 *            deadlock, serialization failure, statement timeout). Skip this round; a later
 *            call reconnects by itself, no sooner than the backoff allows (1 s, doubling to
 *            30 s, reset by a successful connection).
 *   -EIO     the server refused the statement (bad SQL, a violated constraint): the same call
 *            will fail the same way. dw_store_error() says why.
 *
 * Health: all stores of a process report to one struct dw_store_health. Whichever store first
 * sees the database go down logs one line, whichever sees it back logs one line; attempts in
 * between are logged at debug only. An outage costs two log lines, however many workers run
 * and however long it lasts. When the database went down, every connection opened before that
 * is treated as dead and reopened on its next use, so a restarted server costs each worker no
 * failed round once the outage was noticed.
 *
 * Synchronization:
 *   struct dw_store         one thread, its owner; no locks
 *   struct dw_store_health  written by every store (atomics), read by any thread
 */
#ifndef DEALWIRE_STORE_H
#define DEALWIRE_STORE_H

#include "dealwire/time.h"

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reconnection backoff: the first retry after a failed attempt, and the longest wait. */
#define DW_STORE_BACKOFF_MIN_NS DW_NSEC_PER_SEC
#define DW_STORE_BACKOFF_MAX_NS (30 * DW_NSEC_PER_SEC)

/* Seconds libpq waits for a server to answer a connection attempt (unless the connection
 * string sets connect_timeout). */
#define DW_STORE_CONNECT_TIMEOUT "5"

enum dw_store_state {
    DW_STORE_UNKNOWN = 0, /* no connection attempted yet */
    DW_STORE_UP,          /* the last attempt reached the server */
    DW_STORE_DOWN,        /* the last attempt did not */
};

/* The readiness of the database for the whole process. Embed it or allocate it, initialise it
 * with dw_store_health_init(); the fields are store.c's (read them with
 * dw_store_health_read()). It must outlive every store that reports to it. */
struct dw_store_health {
    _Atomic int _state;               /* enum dw_store_state */
    _Atomic bool _schema_ready;       /* migrations applied (dw_store_health_set_schema) */
    _Atomic int _schema_version;      /* highest migration applied */
    _Atomic int64_t _since_ns;        /* CLOCK_REALTIME of the last change of _state */
    _Atomic int64_t _down_mono_ns;    /* CLOCK_MONOTONIC when it last went down */
    _Atomic unsigned _epoch;          /* bumped when it goes down; older connections are stale */
    _Atomic unsigned long _outages;   /* times it went down */
    _Atomic unsigned long _failures;  /* failed connection attempts, in total */
    _Atomic unsigned long _attempts0; /* _failures when it last went down */
};

/* A snapshot of struct dw_store_health, for /readyz and /metrics. */
struct dw_store_status {
    enum dw_store_state state;
    bool schema_ready;             /* the migrations have been applied */
    int schema_version;            /* the highest migration applied, 0 before */
    int64_t since_ns;              /* CLOCK_REALTIME when state last changed; 0 if never */
    unsigned long outages;         /* times the database went down */
    unsigned long failed_attempts; /* failed connection attempts, in total */
};

struct dw_store;

/* thread: any. Sets h to "nothing tried yet". */
void dw_store_health_init(struct dw_store_health *h);

/* thread: any. Copies h into out. The fields are read one by one, so a change in between may
 * show half; each field is itself consistent. */
void dw_store_health_read(const struct dw_store_health *h, struct dw_store_status *out);

/* thread: any. Is the database ready for the daemon: reached on the last attempt, with the
 * schema up to date? This is what /readyz reports. */
bool dw_store_health_is_ready(const struct dw_store_health *h);

/* thread: any. Records that the schema is up to date at version (the migrations ran). */
void dw_store_health_set_schema(struct dw_store_health *h, int version);

/* thread: any (no connection is opened). Creates a store for the libpq connection string
 * conninfo (a postgresql:// URL or "key=value ..."; copied) that reports to health (borrowed
 * for the store's lifetime). The connection is opened by the first call that needs it. */
struct dw_store *dw_store_new(const char *conninfo, struct dw_store_health *health);

/* thread: the store's owner. Closes the connection and frees st. NULL is a no-op. */
void dw_store_free(struct dw_store *st);

/* thread: worker (the store's owner); may block on the network. Runs one SQL statement with
 * nparams text parameters ($1..$n; params[i] NULL is SQL NULL; all borrowed for the call).
 * On success returns 0 and *res, a new result (PGRES_TUPLES_OK or PGRES_COMMAND_OK) that the
 * caller PQclear()s. Otherwise *res is NULL and it returns -EAGAIN or -EIO (see the top of
 * this file), or -EINVAL for a NULL st, sql or res. */
int dw_store_exec(struct dw_store *st, PGresult **res, const char *sql, int nparams,
                  const char *const *params);

/* thread: worker (the store's owner). dw_store_exec() for a statement whose result is not
 * needed (BEGIN, COMMIT, an UPDATE): same return values, the result is dropped. */
int dw_store_run(struct dw_store *st, const char *sql, int nparams, const char *const *params);

/* thread: worker (the store's owner). Runs script, SQL text with one or more statements and
 * no values in it (the embedded migrations), through the simple query protocol. Returns 0,
 * -EAGAIN or -EIO like dw_store_exec(); on -EIO the statements after the failing one did not
 * run. Never use it for text that holds a value: that is what dw_store_exec() is for. */
int dw_store_exec_script(struct dw_store *st, const char *script);

/* A transaction's body for dw_store_tx(): runs statements on st, returns 0 or a negative
 * errno (which dw_store_tx() returns after rolling back). */
typedef int dw_store_tx_fn(struct dw_store *st, void *arg);

/* thread: worker (the store's owner). Runs fn(st, arg) between BEGIN and COMMIT. If fn fails
 * the transaction is rolled back and fn's result returned; if COMMIT fails, its result
 * (-EAGAIN or -EIO). Returns 0 when committed. */
int dw_store_tx(struct dw_store *st, dw_store_tx_fn *fn, void *arg);

/* thread: the store's owner. Is the connection open (as far as the last call knows)? */
bool dw_store_is_connected(const struct dw_store *st);

/* thread: any. Parses s, an integer as PostgreSQL prints it (int2, int4, int8, a command's
 * row count): all of s, within [min, max]. Returns 0 and *out, or -EINVAL (*out untouched):
 * a result is never read with atoi, which turns garbage into 0 and overflow into anything. */
int dw_store_parse_int(const char *s, long long min, long long max, long long *out);

/* thread: any. Parses s, a number as PostgreSQL prints it (numeric, float8, an integer): all
 * of s, finite. Returns 0 and *out, or -EINVAL (*out untouched). */
int dw_store_parse_double(const char *s, double *out);

/* thread: the store's owner. Nanoseconds until the backoff allows the next connection
 * attempt; 0 when connected or when a call may try now. */
int64_t dw_store_retry_in_ns(const struct dw_store *st);

/* thread: the store's owner. The last failure, as one line (e.g. "ERROR 42P01: relation
 * \"x\" does not exist"); "" when there was none. Returns a borrowed pointer valid until the
 * next call on st. */
const char *dw_store_error(const struct dw_store *st);

/* thread: the store's owner. Where in the statement the last failure was, as the server
 * reports it: a 1-based character position, or 0 when it gave none. */
int dw_store_error_position(const struct dw_store *st);

/* thread: any. Checks that conninfo is a connection string libpq can parse, without
 * connecting. Returns 0, or -EINVAL with libpq's reason (one line) in why (size bytes). */
int dw_store_check_conninfo(const char *conninfo, char *why, size_t size);

#endif
