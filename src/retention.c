/*
 * retention — DESIGN: one thread (a ticker, ticker.h) sweeps the durable inbox on a timer: what was
 * never acknowledged within --inbox-retention goes to the dead letters, what was acknowledged and
 * is as old goes away, and so do the publish ids. It owns a store of its own (it blocks on libpq,
 * like a worker, but never takes a worker from the pool), and its only shared state is a
 * handful of atomic counters that the stats read.
 *
 * The one idea: every statement takes its rows with FOR UPDATE SKIP LOCKED, at most
 * DW_RETENTION_BATCH of them, and does all it does to them in that one statement (the move to
 * the dead letters is a DELETE ... RETURNING feeding an INSERT ... ON CONFLICT DO NOTHING,
 * in one data-modifying CTE). So each statement is atomic and short; a second daemon sweeping
 * the same database at the same moment skips the rows this one holds instead of waiting for
 * them, and a row is moved once. The sweep repeats a statement until it handles fewer than a
 * batch, and looks at the stop flag between two statements, so stopping waits for at most one
 * statement.
 *
 * The sweep waits for the schema (the keeper applies the migrations after this thread starts)
 * and skips quietly while the database is unavailable (-EAGAIN: the store logs the outage).
 *
 * The inbox page (dw_retention_inbox_page) is the operator's view of what retention keeps:
 * one statement on the calling worker's store, one snapshot for the user's numbering and the
 * page of messages, cut at a number of messages and at a number of payload bytes.
 */
#define DW_LOG_MODULE "retention"
#include "dealwire/retention.h"
#include "dealwire/answer.h"
#include "dealwire/db.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/store.h"
#include "dealwire/ticker.h"
#include "dealwire/time.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

/* At most one warning a minute for failures other than an outage. */
#define WARN_EVERY_NS (60 * DW_NSEC_PER_SEC)

/* The batch in the SQL below, as text. */
#define BATCH_SQL "10000"
_Static_assert(DW_RETENTION_BATCH == 10000, "BATCH_SQL");

/* $1 the retention in seconds, $2 the reason. Unacknowledged messages older than the
 * retention, oldest first, move to the dead letters: deleted and inserted by one statement.
 * A dead letter already there for the same (user_id, seq) (an operator copied it back into
 * the inbox without deleting it) is kept as it is. Returns the number moved. */
static const char move_sql[] =
    "WITH victims AS ("
    "  SELECT user_id, seq FROM alert_inbox"
    "  WHERE acked_at IS NULL AND created_at < now() - $1::bigint * interval '1 second'"
    "  ORDER BY created_at LIMIT " BATCH_SQL " FOR UPDATE SKIP LOCKED),"
    " moved AS ("
    "  DELETE FROM alert_inbox a USING victims v WHERE a.user_id = v.user_id AND a.seq = v.seq"
    "  RETURNING a.user_id, a.seq, a.type, a.payload, a.created_at),"
    " dead AS ("
    "  INSERT INTO alert_inbox_dead (user_id, seq, type, payload, created_at, reason)"
    "  SELECT user_id, seq, type, payload, created_at, $2 FROM moved"
    "  ON CONFLICT (user_id, seq) DO NOTHING)"
    " SELECT count(*) FROM moved";

/* $1 the retention in seconds. Acknowledged messages older than it. Returns the number. */
static const char acked_sql[] =
    "WITH victims AS ("
    "  SELECT user_id, seq FROM alert_inbox"
    "  WHERE acked_at IS NOT NULL AND created_at < now() - $1::bigint * interval '1 second'"
    "  ORDER BY created_at LIMIT " BATCH_SQL " FOR UPDATE SKIP LOCKED),"
    " gone AS ("
    "  DELETE FROM alert_inbox a USING victims v WHERE a.user_id = v.user_id AND a.seq = v.seq"
    "  RETURNING 1)"
    " SELECT count(*) FROM gone";

/* $1 the retention in seconds. Publish ids older than it. Returns the number. */
static const char ids_sql[] =
    "WITH victims AS ("
    "  SELECT id FROM publish_ids"
    "  WHERE created_at < now() - $1::bigint * interval '1 second'"
    "  ORDER BY created_at LIMIT " BATCH_SQL " FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM publish_ids p USING victims v WHERE p.id = v.id RETURNING 1)"
    " SELECT count(*) FROM gone";

/* The figures for the stats: the depth counts through alert_inbox_unacked_idx. */
static const char measure_sql[] =
    "SELECT (SELECT count(*) FROM alert_inbox WHERE acked_at IS NULL),"
    " (SELECT count(*) FROM alert_inbox_dead)";

struct dw_retention {
    int64_t retention_s;
    char reason[64]; /* alert_inbox_dead.reason */
    struct dw_ticker *ticker;
    int64_t last_warned; /* the ticker's thread only: monotonic ns of the last warning */
    _Atomic int64_t depth, dead_letters, last_sweep_ns;
    _Atomic uint64_t moved, acked_deleted, ids_expired, sweeps;
};

/* ------------------------------------------------------------------------------------------
 * A sweep
 * ------------------------------------------------------------------------------------------ */

/* Runs sql (its one result: a count) until it handles fewer than a batch; adds what it handled
 * to *total as it goes. Returns 0, -ECANCELED when stopping cut it short, or the store's
 * error. */
static int run_batches(struct dw_retention *rt, struct dw_store *st, const char *sql, int nparams,
                       const char *const *params, uint64_t *total)
{
    for (;;) {
        PGresult *res = NULL;
        long long n;
        int r = dw_store_exec(st, &res, sql, nparams, params);

        if (r < 0)
            return r;
        r = PQntuples(res) == 1 ? dw_store_parse_int(PQgetvalue(res, 0, 0), 0, INT64_MAX, &n)
                                : -EPROTO;
        PQclear(res);
        if (r < 0)
            return -EPROTO;
        *total += (uint64_t)n;
        if (n < DW_RETENTION_BATCH)
            return 0;
        if (dw_ticker_stopping(rt->ticker))
            return -ECANCELED;
    }
}

static int measure(struct dw_retention *rt, struct dw_store *st)
{
    PGresult *res = NULL;
    long long depth, dead;
    int r = dw_store_exec(st, &res, measure_sql, 0, NULL);

    if (r < 0)
        return r;
    if (PQntuples(res) != 1 || PQnfields(res) != 2 ||
        dw_store_parse_int(PQgetvalue(res, 0, 0), 0, INT64_MAX, &depth) < 0 ||
        dw_store_parse_int(PQgetvalue(res, 0, 1), 0, INT64_MAX, &dead) < 0) {
        PQclear(res);
        return -EPROTO;
    }
    PQclear(res);
    atomic_store_explicit(&rt->depth, depth, memory_order_relaxed);
    atomic_store_explicit(&rt->dead_letters, dead, memory_order_relaxed);
    return 0;
}

/* A tick of the ticker: one sweep. */
static void sweep(struct dw_store *st, void *arg)
{
    struct dw_retention *rt = arg;
    char secs[24];
    const char *params[2] = {secs, rt->reason};
    uint64_t moved = 0, acked = 0, ids = 0;
    int64_t now;
    int r;

    snprintf(secs, sizeof(secs), "%" PRId64, rt->retention_s);
    r = run_batches(rt, st, move_sql, 2, params, &moved);
    if (r == 0)
        r = run_batches(rt, st, acked_sql, 1, params, &acked);
    if (r == 0)
        r = run_batches(rt, st, ids_sql, 1, params, &ids);
    if (r == 0)
        r = measure(rt, st);

    /* What committed counts, even when a later statement failed. */
    atomic_fetch_add_explicit(&rt->moved, moved, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->acked_deleted, acked, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->ids_expired, ids, memory_order_relaxed);
    if (moved || acked || ids)
        dw_log(DW_LOG_INFO,
               "moved %" PRIu64 " unacknowledged messages to the dead letters, deleted %" PRIu64
               " acknowledged ones and %" PRIu64 " publish ids",
               moved, acked, ids);
    if (r == 0) {
        atomic_fetch_add_explicit(&rt->sweeps, 1, memory_order_relaxed);
        atomic_store_explicit(&rt->last_sweep_ns, dw_now_realtime_ns(), memory_order_relaxed);
        return;
    }
    if (r == -ECANCELED)
        return;
    if (r == -EAGAIN) {
        dw_log(DW_LOG_DEBUG, "sweep skipped: database unavailable (%s)", dw_store_error(st));
        return;
    }
    now = dw_now_mono_ns();
    if (rt->last_warned == 0 || now - rt->last_warned >= WARN_EVERY_NS) {
        dw_log(DW_LOG_WARN, "inbox retention sweep failed: %s",
               r == -EPROTO ? "unexpected result" : dw_store_error(st));
        rt->last_warned = now;
    }
}

struct dw_retention *dw_retention_start(struct dw_db *db, int64_t retention_seconds)
{
    struct dw_retention *rt;
    int64_t period;

    if (!db || retention_seconds < 1)
        return NULL;
    rt = dw_xcalloc(1, sizeof(*rt));
    rt->retention_s = retention_seconds;
    period = retention_seconds * DW_NSEC_PER_SEC / 4;
    if (period < DW_RETENTION_PERIOD_MIN_S * DW_NSEC_PER_SEC)
        period = DW_RETENTION_PERIOD_MIN_S * DW_NSEC_PER_SEC;
    if (period > DW_RETENTION_PERIOD_MAX_S * DW_NSEC_PER_SEC)
        period = DW_RETENTION_PERIOD_MAX_S * DW_NSEC_PER_SEC;
    snprintf(rt->reason, sizeof(rt->reason), "not acknowledged within %" PRId64 " s",
             retention_seconds);
    atomic_init(&rt->depth, -1);
    atomic_init(&rt->dead_letters, -1);
    rt->ticker = dw_ticker_start(db, "inbox retention", period, sweep, NULL, rt);
    if (!rt->ticker) {
        free(rt);
        return NULL;
    }
    dw_log(DW_LOG_DEBUG, "inbox retention %" PRId64 " s, a sweep every %.1f s", retention_seconds,
           (double)period / DW_NSEC_PER_SEC);
    return rt;
}

void dw_retention_counts(const struct dw_retention *rt, struct dw_retention_counts *out)
{
    memset(out, 0, sizeof(*out));
    out->depth = -1;
    out->dead_letters = -1;
    if (!rt)
        return;
    out->retention_seconds = rt->retention_s;
    out->depth = atomic_load_explicit(&rt->depth, memory_order_relaxed);
    out->dead_letters = atomic_load_explicit(&rt->dead_letters, memory_order_relaxed);
    out->moved_to_dead_letters = atomic_load_explicit(&rt->moved, memory_order_relaxed);
    out->acked_deleted = atomic_load_explicit(&rt->acked_deleted, memory_order_relaxed);
    out->ids_expired = atomic_load_explicit(&rt->ids_expired, memory_order_relaxed);
    out->sweeps = atomic_load_explicit(&rt->sweeps, memory_order_relaxed);
    out->last_sweep_ns = atomic_load_explicit(&rt->last_sweep_ns, memory_order_relaxed);
}

void dw_retention_stop(struct dw_retention *rt)
{
    if (!rt)
        return;
    dw_ticker_stop(rt->ticker);
    free(rt);
}

/* ------------------------------------------------------------------------------------------
 * The inbox page
 * ------------------------------------------------------------------------------------------ */

/* $1 user id, $2 after (NULL: the user's acked_seq), $3 the most rows wanted (the limit + 1,
 * to tell whether there is more), $4 the payload bytes after which the page stops. One row per
 * message listed, each with the user's figures; one row of figures with NULL message columns
 * when none is. Columns: last_seq, acked_seq, first_seq, after, n (the rows the limit let
 * through before the byte cut), seq, type, created_at, acked, payload. */
static const char page_sql[] =
    "WITH s AS ("
    "  SELECT coalesce(max(last_seq), 0) AS last_seq, coalesce(max(acked_seq), 0) AS acked_seq"
    "  FROM alert_inbox_seq WHERE user_id = $1),"
    " f AS (SELECT min(seq) AS first_seq FROM alert_inbox WHERE user_id = $1),"
    " p AS (SELECT coalesce($2::bigint, s.acked_seq) AS after FROM s),"
    " page AS ("
    "  SELECT i.seq, i.type, i.created_at, i.acked_at IS NOT NULL AS acked,"
    "   i.payload::text AS payload,"
    "   sum(octet_length(i.payload::text)) OVER (ORDER BY i.seq) AS upto,"
    "   count(*) OVER () AS n"
    "  FROM p, LATERAL (SELECT * FROM alert_inbox a WHERE a.user_id = $1 AND a.seq > p.after"
    "   ORDER BY a.seq LIMIT $3::int) i)"
    " SELECT s.last_seq, s.acked_seq, f.first_seq, p.after, m.n, m.seq, m.type,"
    "  to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
    "  m.acked, m.payload"
    " FROM s CROSS JOIN f CROSS JOIN p"
    "  LEFT JOIN page m ON m.upto - octet_length(m.payload) < $4::bigint"
    " ORDER BY m.seq";

enum page_col {
    COL_LAST_SEQ,
    COL_ACKED_SEQ,
    COL_FIRST_SEQ,
    COL_AFTER,
    COL_N,
    COL_SEQ,
    COL_TYPE,
    COL_CREATED_AT,
    COL_ACKED,
    COL_PAYLOAD,
    N_PAGE_COLS
};

/* The integer at (row, col) of res into *out; NULL reads as null_value. */
static int get_int(const PGresult *res, int row, int col, long long null_value, long long *out)
{
    if (PQgetisnull(res, row, col)) {
        *out = null_value;
        return 0;
    }
    return dw_store_parse_int(PQgetvalue(res, row, col), 0, INT64_MAX, out);
}

static struct json_object *message_doc(const PGresult *res, int row)
{
    struct json_object *m = json_object_new_object();
    struct json_object *payload = json_tokener_parse(PQgetvalue(res, row, COL_PAYLOAD));
    long long seq = 0;

    get_int(res, row, COL_SEQ, 0, &seq);
    json_object_object_add(m, "seq", json_object_new_int64(seq));
    json_object_object_add(m, "type", json_object_new_string(PQgetvalue(res, row, COL_TYPE)));
    json_object_object_add(m, "created_at",
                           json_object_new_string(PQgetvalue(res, row, COL_CREATED_AT)));
    json_object_object_add(
        m, "acked", json_object_new_boolean(strcmp(PQgetvalue(res, row, COL_ACKED), "t") == 0));
    /* The column is json: it parses. Should it not, the text is shown as it is. */
    json_object_object_add(m, "message",
                           payload ? payload
                                   : json_object_new_string(PQgetvalue(res, row, COL_PAYLOAD)));
    return m;
}

int dw_retention_inbox_page(struct dw_store *st, const char *user_id, int64_t after, unsigned limit,
                            char **resp, size_t *resp_len)
{
    char after_s[24], rows_s[16], bytes_s[16];
    const char *params[4] = {user_id, NULL, rows_s, bytes_s};
    struct json_object *obj, *list;
    long long last_seq, acked_seq, first_seq, after_v, n;
    PGresult *res = NULL;
    unsigned listed = 0;
    int r, rows;

    if (after >= 0) {
        snprintf(after_s, sizeof(after_s), "%" PRId64, after);
        params[1] = after_s;
    }
    snprintf(rows_s, sizeof(rows_s), "%u", limit + 1);
    snprintf(bytes_s, sizeof(bytes_s), "%d", DW_INBOX_PAGE_BYTES);
    r = dw_store_exec(st, &res, page_sql, 4, params);
    if (r == -EAGAIN) {
        *resp = dw_answer_error("database unavailable", NULL, resp_len);
        return 503;
    }
    if (r < 0) {
        dw_log(DW_LOG_ERROR, "inbox of %s: %s", user_id, dw_store_error(st));
        *resp = dw_answer_error("database error", NULL, resp_len);
        return 500;
    }
    rows = PQntuples(res);
    if (rows < 1 || PQnfields(res) != N_PAGE_COLS ||
        get_int(res, 0, COL_LAST_SEQ, 0, &last_seq) < 0 ||
        get_int(res, 0, COL_ACKED_SEQ, 0, &acked_seq) < 0 ||
        get_int(res, 0, COL_FIRST_SEQ, -1, &first_seq) < 0 ||
        get_int(res, 0, COL_AFTER, 0, &after_v) < 0 || get_int(res, 0, COL_N, 0, &n) < 0) {
        dw_log(DW_LOG_ERROR, "inbox of %s: unexpected result (%d rows)", user_id, rows);
        PQclear(res);
        *resp = dw_answer_error("database error", NULL, resp_len);
        return 500;
    }

    obj = json_object_new_object();
    list = json_object_new_array();
    json_object_object_add(obj, "user_id", json_object_new_string(user_id));
    json_object_object_add(obj, "last_seq", json_object_new_int64(last_seq));
    json_object_object_add(obj, "acked_seq", json_object_new_int64(acked_seq));
    json_object_object_add(obj, "first_seq",
                           first_seq < 0 ? NULL : json_object_new_int64(first_seq));
    json_object_object_add(obj, "after", json_object_new_int64(after_v));
    for (int i = 0; i < rows && listed < limit; i++) {
        if (PQgetisnull(res, i, COL_SEQ))
            continue; /* the one row of a page without messages */
        json_object_array_add(list, message_doc(res, i));
        listed++;
    }
    json_object_object_add(obj, "messages", list);
    /* More: the limit + 1st row exists, or the byte cut left rows out. */
    json_object_object_add(obj, "more", json_object_new_boolean(n > (long long)listed));
    PQclear(res);
    *resp = dw_answer_json(obj, resp_len);
    return 200;
}
