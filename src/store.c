/*
 * store — DESIGN: a struct dw_store wraps one PGconn and is only ever used by the thread that
 * owns it, so nothing in it is locked. What the stores share is struct dw_store_health, a few
 * atomics that say whether the database is reachable.
 *
 * The one idea: the shared state changes with an atomic exchange, and only the store whose
 * exchange changed it logs. Every other store that fails while the state is already "down"
 * logs at debug. That is how an outage seen by N workers, each retrying with its own backoff,
 * still makes one "down" line and one "back" line.
 *
 * A connection is opened on the first call that needs one. A failed attempt sets the earliest
 * time for the next one (1 s, doubling to 30 s); calls before then fail at once with -EAGAIN
 * and send nothing. A connection that breaks during a call is closed, and the next call may
 * reconnect at once: only failed attempts back off.
 */
#define DW_LOG_MODULE "store"
#include "dealwire/store.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/time.h"
#include "dealwire/thread.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dw_store {
    char *conninfo;
    struct dw_store_health *health; /* borrowed */
    PGconn *conn;                   /* NULL when not connected */
    unsigned epoch;                 /* health->_epoch when conn was opened */
    int64_t next_try_ns;            /* monotonic; no connection attempt before it */
    int64_t backoff_ns;             /* the wait after the next failed attempt */
    char err[512];                  /* the last failure, one line */
    int err_pos;                    /* its position in the statement (1-based), 0 if none */
};

/* ------------------------------------------------------------------------------------------
 * Pure helpers (unit-tested)
 * ------------------------------------------------------------------------------------------ */

/* The wait after the one that just passed: doubled, capped at DW_STORE_BACKOFF_MAX_NS. */
static int64_t next_backoff(int64_t cur)
{
    if (cur < DW_STORE_BACKOFF_MIN_NS)
        return DW_STORE_BACKOFF_MIN_NS;
    return cur >= DW_STORE_BACKOFF_MAX_NS / 2 ? DW_STORE_BACKOFF_MAX_NS : cur * 2;
}

/* Would the same statement likely succeed later? SQLSTATE classes and codes that say "not
 * now" rather than "never": connection exceptions (08), insufficient resources (53),
 * operator intervention (57: shutdown, cancel, cannot connect now), serialization failure,
 * deadlock, lock not available. */
static bool is_transient_sqlstate(const char *state)
{
    static const char *const codes[] = {"40001", "40P01", "55P03", NULL};

    if (!state || strlen(state) != 5)
        return false;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
        strncmp(state, "57", 2) == 0)
        return true;
    for (size_t i = 0; codes[i]; i++) {
        if (strcmp(state, codes[i]) == 0)
            return true;
    }
    return false;
}

/* Copies src into dst (size bytes) as one line: newlines and tabs become spaces, runs of
 * spaces collapse, and leading and trailing spaces go. */
static void flatten(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    bool space = false;

    if (size == 0)
        return;
    for (const char *p = src ? src : ""; *p && n + 1 < size; p++) {
        bool is_space = *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r';

        if (is_space) {
            space = n > 0;
            continue;
        }
        if (space) {
            if (n + 2 >= size)
                break; /* no room for the space and what follows it */
            dst[n++] = ' ';
        }
        space = false;
        dst[n++] = *p;
    }
    dst[n] = '\0';
}

/* ------------------------------------------------------------------------------------------
 * Health
 * ------------------------------------------------------------------------------------------ */

void dw_store_health_init(struct dw_store_health *h)
{
    atomic_init(&h->_state, DW_STORE_UNKNOWN);
    atomic_init(&h->_schema_ready, false);
    atomic_init(&h->_schema_version, 0);
    atomic_init(&h->_since_ns, 0);
    atomic_init(&h->_down_mono_ns, 0);
    atomic_init(&h->_epoch, 0);
    atomic_init(&h->_outages, 0);
    atomic_init(&h->_failures, 0);
    atomic_init(&h->_attempts0, 0);
}

void dw_store_health_read(const struct dw_store_health *h, struct dw_store_status *out)
{
    out->state = (enum dw_store_state)atomic_load(&h->_state);
    out->schema_ready = atomic_load(&h->_schema_ready);
    out->schema_version = atomic_load(&h->_schema_version);
    out->since_ns = atomic_load(&h->_since_ns);
    out->outages = atomic_load(&h->_outages);
    out->failed_attempts = atomic_load(&h->_failures);
}

bool dw_store_health_is_ready(const struct dw_store_health *h)
{
    return atomic_load(&h->_state) == DW_STORE_UP && atomic_load(&h->_schema_ready);
}

void dw_store_health_set_schema(struct dw_store_health *h, int version)
{
    atomic_store(&h->_schema_version, version);
    /* After the version, so a reader that sees ready also sees the version (seq_cst). */
    atomic_store(&h->_schema_ready, true);
}

/* The store saw the database down (attempt failed, or connection lost: what says which). */
static void report_down(struct dw_store *st, const char *what, bool failed_attempt)
{
    struct dw_store_health *h = st->health;
    int prev;

    if (failed_attempt)
        atomic_fetch_add(&h->_failures, 1);
    prev = atomic_exchange(&h->_state, DW_STORE_DOWN);
    if (prev == DW_STORE_DOWN) {
        dw_log(DW_LOG_DEBUG, "%s (still down): %s", what, st->err);
        return;
    }
    /* We changed the state, so we are the one to announce it, and the one to mark every
     * connection opened before now as stale (see dw_store_exec). */
    atomic_fetch_add(&h->_epoch, 1);
    atomic_store(&h->_since_ns, dw_now_realtime_ns());
    atomic_store(&h->_down_mono_ns, dw_now_mono_ns());
    atomic_store(&h->_attempts0, atomic_load(&h->_failures) - (failed_attempt ? 1 : 0));
    atomic_fetch_add(&h->_outages, 1);
    dw_log_event(DW_LOG_WARN, "db.down", (DW_LOG_STR("reason", what), DW_LOG_STR("error", st->err)),
                 "database %s: %s; retrying with backoff (%lld s doubling to %lld s)", what,
                 st->err, DW_STORE_BACKOFF_MIN_NS / DW_NSEC_PER_SEC,
                 DW_STORE_BACKOFF_MAX_NS / DW_NSEC_PER_SEC);
}

static void report_up(struct dw_store *st)
{
    struct dw_store_health *h = st->health;
    int prev = atomic_exchange(&h->_state, DW_STORE_UP);
    int version = PQserverVersion(st->conn);

    if (prev == DW_STORE_UP)
        return;
    atomic_store(&h->_since_ns, dw_now_realtime_ns());
    if (prev == DW_STORE_DOWN) {
        double down_s =
            (double)(dw_now_mono_ns() - atomic_load(&h->_down_mono_ns)) / DW_NSEC_PER_SEC;
        unsigned long failed = atomic_load(&h->_failures) - atomic_load(&h->_attempts0);

        dw_log_event(DW_LOG_INFO, "db.up",
                     (DW_LOG_INT("down_ms", down_s * 1000), DW_LOG_INT("failed_attempts", failed)),
                     "database reachable again after %.1f s (%lu failed attempts)", down_s, failed);
        return;
    }
    dw_log_event(DW_LOG_INFO, "db.connected",
                 (DW_LOG_INT("server_version", version), DW_LOG_STR("host", PQhost(st->conn)),
                  DW_LOG_STR("port", PQport(st->conn)), DW_LOG_STR("database", PQdb(st->conn))),
                 "connected to PostgreSQL %d.%d at %s:%s, database %s", version / 10000,
                 version % 10000, PQhost(st->conn), PQport(st->conn), PQdb(st->conn));
}

/* ------------------------------------------------------------------------------------------
 * The connection
 * ------------------------------------------------------------------------------------------ */

/* Server notices (e.g. "relation already exists, skipping") would go to stderr through
 * libpq's default processor; they are ours to log, and only at debug. */
static void on_notice(void *arg, const char *message)
{
    char line[512];

    (void)arg;
    flatten(line, sizeof(line), message);
    dw_log(DW_LOG_DEBUG, "server: %s", line);
}

static void disconnect(struct dw_store *st)
{
    if (st->conn) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
}

/* Opens the connection unless it is open, or returns -EAGAIN while backing off or when the
 * attempt fails. */
static int ensure_connected(struct dw_store *st)
{
    /* libpq's own defaults first; the connection string (expanded from "dbname") overrides
     * them; client_encoding comes last because everything we send and read is UTF-8. JIT is
     * off for the session: every statement here is short, and PostgreSQL compiles one whose
     * estimated cost passes jit_above_cost on every call (the inbox's replay page: 28 ms with
     * JIT, 1.7 ms without, for 32 users; connections with --db at a fifth of the rate). */
    static const char *const keywords[] = {"connect_timeout",
                                           "application_name",
                                           "keepalives_idle",
                                           "keepalives_interval",
                                           "keepalives_count",
                                           "options",
                                           "dbname",
                                           "client_encoding",
                                           NULL};
    const char *values[] = {DW_STORE_CONNECT_TIMEOUT,
                            "dealwire",
                            "30",
                            "10",
                            "3",
                            "-c jit=off",
                            st->conninfo,
                            "UTF8",
                            NULL};
    unsigned epoch = atomic_load(&st->health->_epoch);
    int64_t now;

    if (st->conn && st->epoch != epoch) {
        /* The database went down after this connection opened: it is most likely dead, and
         * finding out by a failed statement would cost a round. */
        dw_log(DW_LOG_DEBUG, "reopening a connection older than the last outage");
        disconnect(st);
    }
    if (st->conn)
        return 0;

    now = dw_now_mono_ns();
    if (now < st->next_try_ns) {
        snprintf(st->err, sizeof(st->err), "not connected; next attempt in %lld ms",
                 (long long)((st->next_try_ns - now) / DW_NSEC_PER_MSEC));
        return -EAGAIN;
    }

    st->conn = PQconnectdbParams(keywords, values, 1);
    if (!st->conn)
        dw_panic("libpq could not allocate a connection");
    if (PQstatus(st->conn) != CONNECTION_OK) {
        flatten(st->err, sizeof(st->err), PQerrorMessage(st->conn));
        disconnect(st);
        st->next_try_ns = now + st->backoff_ns;
        st->backoff_ns = next_backoff(st->backoff_ns);
        report_down(st, "unreachable", true);
        return -EAGAIN;
    }
    PQsetNoticeProcessor(st->conn, on_notice, NULL);
    st->epoch = epoch;
    st->backoff_ns = DW_STORE_BACKOFF_MIN_NS;
    st->next_try_ns = 0;
    st->err[0] = '\0';
    report_up(st);
    return 0;
}

/* Records a failed result's reason in st->err: "ERROR 42P01: message (detail)". */
static void set_result_error(struct dw_store *st, const PGresult *r)
{
    const char *severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
    char raw[sizeof(st->err)];
    long long where;

    if (!pos || dw_store_parse_int(pos, 0, INT_MAX, &where) < 0)
        where = 0;
    st->err_pos = (int)where;
    if (!primary) {
        /* Not from the server (libpq's own, e.g. the connection broke). */
        flatten(st->err, sizeof(st->err), PQresultErrorMessage(r));
        if (!st->err[0])
            flatten(st->err, sizeof(st->err), PQerrorMessage(st->conn));
        return;
    }
    snprintf(raw, sizeof(raw), "%s %s: %s%s%s%s", severity ? severity : "ERROR",
             state ? state : "?????", primary, detail ? " (" : "", detail ? detail : "",
             detail ? ")" : "");
    flatten(st->err, sizeof(st->err), raw);
}

/* Turns what PQexec* returned into our result: 0 and *out, -EAGAIN or -EIO. */
static int finish(struct dw_store *st, PGresult *r, PGresult **out)
{
    ExecStatusType status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    const char *state;
    bool transient;

    st->err_pos = 0;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        st->err[0] = '\0';
        if (out)
            *out = r;
        else
            PQclear(r);
        return 0;
    }

    if (r)
        set_result_error(st, r);
    else
        flatten(st->err, sizeof(st->err), PQerrorMessage(st->conn));
    state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    transient = is_transient_sqlstate(state);
    if (r && status != PGRES_FATAL_ERROR)
        snprintf(st->err, sizeof(st->err), "unexpected result %s", PQresStatus(status));
    PQclear(r);

    if (PQstatus(st->conn) != CONNECTION_OK) {
        disconnect(st);
        report_down(st, "connection lost", false);
        return -EAGAIN;
    }
    return transient ? -EAGAIN : -EIO;
}

/* Rolls back whatever transaction the connection is in; keeps st->err as it was. */
static void rollback(struct dw_store *st)
{
    if (!st->conn || PQtransactionStatus(st->conn) == PQTRANS_IDLE)
        return;
    PQclear(PQexec(st->conn, "ROLLBACK"));
    if (PQstatus(st->conn) != CONNECTION_OK)
        disconnect(st);
}

/* ------------------------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------------------------ */

struct dw_store *dw_store_new(const char *conninfo, struct dw_store_health *health)
{
    struct dw_store *st;

    if (!conninfo || !health)
        return NULL;
    st = dw_xcalloc(1, sizeof(*st));
    st->conninfo = dw_xstrdup(conninfo);
    st->health = health;
    st->backoff_ns = DW_STORE_BACKOFF_MIN_NS;
    return st;
}

void dw_store_free(struct dw_store *st)
{
    if (!st)
        return;
    disconnect(st);
    /* The connection string may hold a password. */
    memset(st->conninfo, 0, strlen(st->conninfo));
    free(st->conninfo);
    free(st);
}

int dw_store_exec(struct dw_store *st, PGresult **res, const char *sql, int nparams,
                  const char *const *params)
{
    int r;

    if (!st || !res || !sql || nparams < 0 || (nparams > 0 && !params))
        return -EINVAL;
    DW_ASSERT_THREAD(DW_THREAD_WORKER);
    *res = NULL;
    r = ensure_connected(st);
    if (r < 0)
        return r;
    return finish(st, PQexecParams(st->conn, sql, nparams, NULL, params, NULL, NULL, 0), res);
}

int dw_store_run(struct dw_store *st, const char *sql, int nparams, const char *const *params)
{
    PGresult *res;
    int r = dw_store_exec(st, &res, sql, nparams, params);

    if (r == 0)
        PQclear(res);
    return r;
}

int dw_store_exec_script(struct dw_store *st, const char *script)
{
    int r;

    if (!st || !script)
        return -EINVAL;
    DW_ASSERT_THREAD(DW_THREAD_WORKER);
    r = ensure_connected(st);
    if (r < 0)
        return r;
    return finish(st, PQexec(st->conn, script), NULL);
}

int dw_store_tx(struct dw_store *st, dw_store_tx_fn *fn, void *arg)
{
    PGresult *res;
    int r;

    if (!st || !fn)
        return -EINVAL;
    r = dw_store_run(st, "BEGIN", 0, NULL);
    if (r < 0)
        return r;
    r = fn(st, arg);
    if (r < 0) {
        rollback(st);
        return r;
    }
    r = dw_store_exec(st, &res, "COMMIT", 0, NULL);
    if (r < 0)
        return r;
    /* COMMIT of a transaction that an ignored error had aborted "succeeds" as a ROLLBACK. */
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        snprintf(st->err, sizeof(st->err), "transaction rolled back: a statement in it failed");
        r = -EIO;
    }
    PQclear(res);
    return r;
}

bool dw_store_is_connected(const struct dw_store *st)
{
    return st && st->conn && PQstatus(st->conn) == CONNECTION_OK;
}

int64_t dw_store_retry_in_ns(const struct dw_store *st)
{
    int64_t left;

    if (!st || st->conn)
        return 0;
    left = st->next_try_ns - dw_now_mono_ns();
    return left > 0 ? left : 0;
}

const char *dw_store_error(const struct dw_store *st)
{
    return st ? st->err : "";
}

int dw_store_error_position(const struct dw_store *st)
{
    return st ? st->err_pos : 0;
}

int dw_store_check_conninfo(const char *conninfo, char *why, size_t size)
{
    PQconninfoOption *opts;
    char *err = NULL;

    if (!conninfo || !*conninfo) {
        flatten(why, size, "empty connection string");
        return -EINVAL;
    }
    /* A word without '=' that is not a URL is a database name, as libpq reads it. */
    if (!strchr(conninfo, '=') && strncmp(conninfo, "postgresql://", 13) != 0 &&
        strncmp(conninfo, "postgres://", 11) != 0)
        return 0;
    opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        flatten(why, size, err ? err : "cannot parse the connection string");
        PQfreemem(err);
        return -EINVAL;
    }
    PQconninfoFree(opts);
    return 0;
}

/* ==========================================================================================
 * Values of results
 */

int dw_store_parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (!s || !*s || *s == ' ' || *s == '+')
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*end != '\0' || errno == ERANGE || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int dw_store_parse_double(const char *s, double *out)
{
    char *end;
    double v;

    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
        return -EINVAL;
    *out = v;
    return 0;
}
