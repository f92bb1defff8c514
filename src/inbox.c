/*
 * inbox — DESIGN: one statement writes a group of critical messages and numbers them. It
 * raises each user's last_seq in alert_inbox_seq by the number of the user's messages in the
 * group (INSERT ... ON CONFLICT DO UPDATE ... RETURNING, which locks the user's row until the
 * transaction ends), numbers the messages from there in the order given, and inserts them.
 * One snapshot, one round trip, however many users and messages; two writers for one user
 * take turns on the row, so seq is gap-free whoever writes.
 *
 * The messages travel as three text parameters, joined with the ASCII record separator
 * (0x1e): user ids (no control characters, proto.h), type names, and the rendered JSON texts,
 * which hold no raw control character either (json-c escapes every one below 0x20). So no
 * array literal needs escaping. The database stores '{"seq":N,' + the text after its '{',
 * and the daemon builds the same bytes for the wire: a replay sends what was sent.
 *
 * The inbox's thread: submitters queue jobs (a mutex and a condition variable: one job per
 * publish request or trip update, never per delivery); the thread takes every job queued,
 * writes their entries with as few statements as DW_INBOX_WRITE_MAX allows, and calls the
 * jobs back in order. A job's entries are never split across two statements, so a job is
 * written whole or not at all.
 */
#define DW_LOG_MODULE "inbox"
#include "dealwire/inbox.h"
#include "dealwire/db.h"
#include "dealwire/hub.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/rcu.h"
#include "dealwire/store.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"
#include "dealwire/wake.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define SEP '\x1e'

#define DW_STR_(x) #x
#define DW_STR(x)  DW_STR_(x)

/* $1 user ids, $2 type names, $3 texts without seq, each joined with SEP. Returns the seqs in
 * the order given. */
static const char write_sql[] =
    "WITH input AS ("
    "  SELECT u, t, p, ord FROM unnest(string_to_array($1, E'\\x1e'),"
    "   string_to_array($2, E'\\x1e'), string_to_array($3, E'\\x1e'))"
    "   WITH ORDINALITY AS x(u, t, p, ord)),"
    " counts AS (SELECT u, count(*) AS n FROM input GROUP BY u),"
    " alloc AS ("
    "  INSERT INTO alert_inbox_seq AS s (user_id, last_seq) SELECT u, n FROM counts"
    "  ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq"
    "  RETURNING s.user_id, s.last_seq),"
    " numbered AS ("
    "  SELECT i.ord, i.u, i.t, i.p,"
    "   a.last_seq - c.n + row_number() OVER (PARTITION BY i.u ORDER BY i.ord) AS seq"
    "  FROM input i JOIN counts c ON c.u = i.u JOIN alloc a ON a.user_id = i.u),"
    " stored AS ("
    "  INSERT INTO alert_inbox (user_id, seq, type, payload)"
    "  SELECT u, seq, t, ('{\"seq\":' || seq || ',' || substr(p, 2))::json FROM numbered)"
    " SELECT seq FROM numbered ORDER BY ord";

/* $1 user ids, $2 seqs, joined with SEP, one per user. Raises each user's acked_seq (never
 * past last_seq: a client cannot acknowledge what was not written) and marks the messages. */
static const char ack_sql[] =
    "WITH x AS (SELECT u, s FROM unnest(string_to_array($1, E'\\x1e'),"
    "   string_to_array($2, E'\\x1e')::bigint[]) AS x(u, s)),"
    " raised AS ("
    "  UPDATE alert_inbox_seq q SET acked_seq = least(x.s, q.last_seq) FROM x"
    "  WHERE q.user_id = x.u AND q.acked_seq < least(x.s, q.last_seq) RETURNING 1)"
    " UPDATE alert_inbox a SET acked_at = now() FROM x"
    " WHERE a.user_id = x.u AND a.seq <= x.s AND a.acked_at IS NULL";

/* $1 publish item ids joined with SEP. Claims each id that is not known yet; returns, in the
 * order given, whether this statement claimed it. */
static const char claim_sql[] =
    "WITH input AS (SELECT i, ord FROM unnest(string_to_array($1, E'\\x1e'))"
    "   WITH ORDINALITY AS x(i, ord)),"
    " claimed AS (INSERT INTO publish_ids (id) SELECT i FROM input"
    "  ON CONFLICT (id) DO NOTHING RETURNING id)"
    " SELECT input.ord, claimed.id IS NOT NULL FROM input LEFT JOIN claimed ON claimed.id = input.i"
    " ORDER BY input.ord";

/* $1 ids joined with SEP: what the first publish of each recorded, in the order given, and
 * the stored message of one whose delivery was never recorded (recipients NULL). */
static const char known_sql[] =
    "SELECT x.ord, p.seq, p.recipients, a.type, a.payload::text"
    " FROM unnest(string_to_array($1, E'\\x1e')) WITH ORDINALITY AS x(i, ord)"
    " LEFT JOIN publish_ids p ON p.id = x.i"
    " LEFT JOIN alert_inbox a ON p.recipients IS NULL AND a.user_id = p.user_id AND a.seq = p.seq"
    " ORDER BY x.ord";

/* $1 ids, $2 user ids, $3 seqs, joined with SEP: the durable message each claimed id made. */
static const char track_sql[] =
    "UPDATE publish_ids p SET user_id = x.u, seq = x.s::bigint"
    " FROM unnest(string_to_array($1, E'\\x1e'), string_to_array($2, E'\\x1e'),"
    "  string_to_array($3, E'\\x1e')) AS x(i, u, s) WHERE p.id = x.i";

/* $1 ids, $2 recipients, joined with SEP. */
static const char recipients_sql[] =
    "UPDATE publish_ids p SET recipients = x.r::bigint"
    " FROM unnest(string_to_array($1, E'\\x1e'), string_to_array($2, E'\\x1e')) AS x(i, r)"
    " WHERE p.id = x.i";

/* $1 user ids, $2 afters (-1: the user's acked_seq), $3 byte budgets, joined with SEP, one
 * per page. Per page, in the order given: its head (last_seq, acked_seq, the after used, the
 * lowest seq held) on every row, and its messages in seq order (a page with none has one row
 * whose seq is NULL). The budget is applied to the running sum of the payloads' lengths, so
 * a page holds at least one message and no more than budget + one message's bytes. */
static const char read_sql[] =
    "WITH req AS ("
    "  SELECT u, a::bigint AS a, b::bigint AS b, ord FROM unnest(string_to_array($1, E'\\x1e'),"
    "   string_to_array($2, E'\\x1e'), string_to_array($3, E'\\x1e'))"
    "   WITH ORDINALITY AS x(u, a, b, ord)),"
    " head AS ("
    "  SELECT r.ord, r.u, r.b, coalesce(s.last_seq, 0) AS last_seq,"
    "   coalesce(s.acked_seq, 0) AS acked_seq,"
    "   CASE WHEN r.a < 0 THEN coalesce(s.acked_seq, 0) ELSE r.a END AS after"
    "  FROM req r LEFT JOIN alert_inbox_seq s ON s.user_id = r.u)"
    " SELECT h.ord, h.last_seq, h.acked_seq, h.after,"
    "  (SELECT min(i.seq) FROM alert_inbox i WHERE i.user_id = h.u) AS first_seq,"
    "  p.seq, p.type, p.payload"
    " FROM head h LEFT JOIN LATERAL ("
    "  SELECT w.seq, w.type, w.payload FROM ("
    "   SELECT q.seq, q.type, q.payload,"
    "    sum(octet_length(q.payload)) OVER (ORDER BY q.seq) - octet_length(q.payload) AS before"
    "   FROM (SELECT i.seq, i.type, i.payload::text AS payload FROM alert_inbox i"
    "    WHERE i.user_id = h.u AND i.seq > h.after ORDER BY i.seq LIMIT " DW_STR(
        DW_INBOX_PAGE_MAX) ") q) w"
                           "  WHERE w.before < h.b) p ON true"
                           " ORDER BY h.ord, p.seq";

/* ------------------------------------------------------------------------------------------
 * Entries and the statement
 * ------------------------------------------------------------------------------------------ */

void dw_inbox_entry_init(struct dw_inbox_entry *e, const char *user_id, enum dw_msg_type type,
                         struct json_object *obj)
{
    const char *text;

    memset(e, 0, sizeof(*e));
    snprintf(e->user_id, sizeof(e->user_id), "%s", user_id);
    e->type = type;
    /* "seq" is the inbox's: a member of that name from the publisher gives way to it. */
    json_object_object_del(obj, "seq");
    text = dw_msg_render(obj, &e->len);
    e->text = dw_xstrndup(text, e->len);
}

void dw_inbox_entry_release(struct dw_inbox_entry *e)
{
    free(e->text);
    e->text = NULL;
    if (e->msg)
        dw_msg_unref(e->msg);
    e->msg = NULL;
}

/* The message with seq as its first member: '{"seq":N,' and the text after its '{'. */
static struct dw_msg *seq_message(const struct dw_inbox_entry *e, int64_t seq)
{
    char head[40];
    int n = snprintf(head, sizeof(head), "{\"seq\":%" PRId64 ",", seq);
    char *text = dw_xmalloc((size_t)n + e->len);
    struct dw_msg *m;

    memcpy(text, head, (size_t)n);
    memcpy(text + n, e->text + 1, e->len - 1);
    m = dw_msg_new_text(e->type, DW_MSG_F_CRITICAL, text, (size_t)n + e->len - 1);
    m->seq = seq;
    m->accepted_at = dw_now_mono_ns(); /* /metrics: delivery latency from the inbox's write */
    free(text);
    return m;
}

/* Appends s and SEP (unless last) to *buf. */
static void join(char **buf, size_t *len, size_t *cap, const char *s, size_t n, bool last)
{
    if (!*buf || *len + n + 2 > *cap) {
        *cap = (*len + n + 2) * 2;
        *buf = dw_xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    if (!last)
        (*buf)[(*len)++] = SEP;
    (*buf)[*len] = '\0';
}

/* The text of value i's column col (*len bytes): in buf (size bytes) or elsewhere, valid
 * until the next call. */
typedef const char *column_fn(const void *arg, size_t i, int col, char *buf, size_t size,
                              size_t *len);

/* Runs sql with ncols (at most 3) text parameters, each the n values' column joined with SEP
 * (column says what each is). With res, its result (dw_store_exec); without, it is dropped. */
static int run_columns(struct dw_store *st, PGresult **res, const char *sql, int ncols, size_t n,
                       column_fn *column, const void *arg)
{
    char *cols[3] = {NULL, NULL, NULL};
    size_t len[3] = {0, 0, 0}, cap[3] = {0, 0, 0};
    const char *params[3];
    int r;

    for (size_t i = 0; i < n; i++) {
        for (int c = 0; c < ncols; c++) {
            char buf[32];
            size_t vlen;
            const char *v = column(arg, i, c, buf, sizeof(buf), &vlen);

            join(&cols[c], &len[c], &cap[c], v, vlen, i + 1 == n);
        }
    }
    for (int c = 0; c < ncols; c++)
        params[c] = cols[c];
    r = res ? dw_store_exec(st, res, sql, ncols, params) : dw_store_run(st, sql, ncols, params);
    for (int c = 0; c < ncols; c++)
        free(cols[c]);
    return r;
}

/* The columns of a write: user id, type name, text (none needs buf; column_fn's signature). */
static const char *entry_column(const void *arg, size_t i, int col,
                                char *buf, /* NOLINT(readability-non-const-parameter) */
                                size_t size, size_t *len)
{
    const struct dw_inbox_entry *const *ents = arg;
    const struct dw_inbox_entry *e = ents[i];
    const char *v = col == 0 ? e->user_id : dw_msg_type_name(e->type);

    (void)buf;
    (void)size;
    if (col == 2) {
        *len = e->len;
        return e->text;
    }
    *len = strlen(v);
    return v;
}

/* One statement for the n entries that ents points to (at most DW_INBOX_WRITE_MAX): they need
 * not be side by side (the inbox's thread writes the entries of several jobs together). */
static int write_chunk(struct dw_store *st, struct dw_inbox_entry *const *ents, size_t n)
{
    int64_t *seqs = NULL;
    PGresult *res = NULL;
    int r = run_columns(st, &res, write_sql, 3, n, entry_column, ents);

    if (r < 0)
        goto out;
    if (PQntuples(res) != (int)n || PQnfields(res) != 1) {
        dw_log(DW_LOG_ERROR, "inbox write: %d rows for %zu messages", PQntuples(res), n);
        r = -EPROTO;
        goto out;
    }
    /* Parse every seq before changing any entry: all or nothing. */
    seqs = dw_xmalloc(n * sizeof(*seqs));
    for (size_t i = 0; i < n; i++) {
        long long v;

        if (dw_store_parse_int(PQgetvalue(res, (int)i, 0), 1, INT64_MAX, &v) < 0) {
            r = -EPROTO;
            goto out;
        }
        seqs[i] = (int64_t)v;
    }
    for (size_t i = 0; i < n; i++) {
        ents[i]->seq = seqs[i];
        ents[i]->msg = seq_message(ents[i], seqs[i]);
    }
out:
    PQclear(res);
    free(seqs);
    return r;
}

int dw_inbox_write(struct dw_store *st, struct dw_inbox_entry *entries, size_t n)
{
    struct dw_inbox_entry **ents = dw_xmalloc((n ? n : 1) * sizeof(struct dw_inbox_entry *));
    int r = 0;

    for (size_t i = 0; i < n; i++)
        ents[i] = &entries[i];
    for (size_t i = 0; i < n && r == 0; i += DW_INBOX_WRITE_MAX) {
        size_t k = n - i < DW_INBOX_WRITE_MAX ? n - i : DW_INBOX_WRITE_MAX;

        r = write_chunk(st, ents + i, k);
    }
    free(ents);
    return r;
}

size_t dw_inbox_deliver(struct dw_hub *hub, const struct dw_inbox_entry *e)
{
    size_t n;

    if (!e->msg)
        return 0;
    n = dw_hub_send_user(hub, e->user_id, e->msg);
    dw_hub_count_published(hub, (int)e->type, false);
    return n;
}

/* ------------------------------------------------------------------------------------------
 * The inbox's thread
 * ------------------------------------------------------------------------------------------ */

struct job {
    struct job *next;
    struct dw_inbox_entry *entries;
    size_t n;
    struct dw_inbox_track *tracks; /* a publish with ids: written alone (write_tracked) */
    size_t ntracks;
    dw_inbox_done_fn *done;
    void *arg;
};

/* An ack (a user's seq), or the recipients of a publish id (in user_id): both are grouped
 * into one statement per batch, the highest value per key winning. */
struct ack {
    struct ack *next;
    int64_t seq;
    char user_id[DW_USER_ID_MAX + 1];
};

struct dw_inbox {
    struct dw_db *db;
    struct dw_hub *hub;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail; /* under lock */
    struct ack *acks;        /* under lock, newest first */
    struct ack *notes;       /* under lock: recipients of publish ids, newest first */
    struct dw_inbox_page *pages, **pages_tail; /* under lock: readers waiting, oldest first */
    bool stopping;                             /* under lock */
    _Atomic uint64_t written, failed, writes, acks_done, acks_failed;
    _Atomic uint64_t replays, replayed, replays_failed, not_recovered, duplicates;
    int64_t last_warned; /* thread only: monotonic ns of the last failure logged */
};

/* Reads one row's int8 column (NULL reads as 0). */
static int row_int(const PGresult *res, int row, int col, int64_t *out)
{
    long long v;

    if (PQgetisnull(res, row, col)) {
        *out = 0;
        return 0;
    }
    if (dw_store_parse_int(PQgetvalue(res, row, col), 0, INT64_MAX, &v) < 0)
        return -EPROTO;
    *out = (int64_t)v;
    return 0;
}

/* Counts a write of total entries (r: its result), warning at most once a minute. */
static void count_write(struct dw_inbox *ib, struct dw_store *st, size_t total, int r)
{
    if (r == 0) {
        atomic_fetch_add_explicit(&ib->written, total, memory_order_relaxed);
        atomic_fetch_add_explicit(&ib->writes, 1, memory_order_relaxed);
    } else {
        int64_t now = dw_now_mono_ns();

        atomic_fetch_add_explicit(&ib->failed, total, memory_order_relaxed);
        if (ib->last_warned == 0 || now - ib->last_warned > 60 * DW_NSEC_PER_SEC) {
            dw_log(DW_LOG_WARN, "cannot write %zu critical messages: %s", total,
                   dw_store_error(st));
            ib->last_warned = now;
        }
    }
}

/* Writes the entries of jobs [first, end) (at most DW_INBOX_WRITE_MAX together) with one
 * statement, and calls each job back. */
static void write_group(struct dw_inbox *ib, struct dw_store *st, struct job *first,
                        struct job *end, size_t total)
{
    struct dw_inbox_entry **ents = dw_xmalloc(total * sizeof(struct dw_inbox_entry *));
    size_t k = 0;
    int r;

    for (struct job *j = first; j != end; j = j->next) {
        for (size_t i = 0; i < j->n; i++)
            ents[k++] = &j->entries[i];
    }
    r = write_chunk(st, ents, total); /* total <= DW_INBOX_WRITE_MAX (write_jobs) */
    free(ents);
    count_write(ib, st, total, r);
    /* Each job delivers its own messages and answers; one wake of the I/O thread for all. */
    dw_wake_batch_begin();
    for (struct job *j = first; j != end; j = j->next)
        j->done(j->arg, r);
    dw_wake_batch_end();
}

/* The columns of a tracked job: the id; the durable message's user and seq. */
static const char *track_column(const void *arg, size_t i, int col, char *buf, size_t size,
                                size_t *len)
{
    const struct dw_inbox_track *const *tracks = arg;
    const struct dw_inbox_track *t = tracks[i];
    const char *v = col == 0 ? t->id : t->entry->user_id;

    if (col == 2) {
        *len = (size_t)snprintf(buf, size, "%" PRId64, t->entry->seq);
        return buf;
    }
    *len = strlen(v);
    return v;
}

/* A duplicate whose first publish stored its message but never recorded a delivery: its
 * commit's answer was lost with the connection (the first publish answered 503, and sent
 * nothing). The message, as stored, goes out now, once, for the retry: on the track's entry,
 * as if written now, with the first one's seq. */
static void redeliver(struct dw_inbox_track *t, const PGresult *res, int row)
{
    int type = dw_msg_type_parse(PQgetvalue(res, row, 3));
    struct dw_msg *m =
        dw_msg_new_text(type < 0 ? DW_MSG_NOTIFICATION : (enum dw_msg_type)type, DW_MSG_F_CRITICAL,
                        PQgetvalue(res, row, 4), (size_t)PQgetlength(res, row, 4));

    m->seq = t->seq;
    t->entry->seq = t->seq;
    t->entry->msg = m;
    t->redeliver = true;
}

/* A tracked job's transaction (dw_store_tx): claims its ids, answers the known ones, writes the
 * entries of the others and records which message each id made. */
static int tracked_tx(struct dw_store *st, void *arg)
{
    struct job *j = arg;
    struct dw_inbox_track **ts = dw_xmalloc(j->ntracks * sizeof(struct dw_inbox_track *));
    struct dw_inbox_entry **ents = dw_xmalloc((j->n ? j->n : 1) * sizeof(struct dw_inbox_entry *));
    PGresult *res = NULL;
    size_t ndup = 0, k = 0, nmade = 0;
    int r;

    for (size_t i = 0; i < j->ntracks; i++)
        ts[i] = &j->tracks[i];
    r = run_columns(st, &res, claim_sql, 1, j->ntracks, track_column, ts);
    if (r == 0 && (PQntuples(res) != (int)j->ntracks || PQnfields(res) != 2))
        r = -EPROTO;
    for (size_t i = 0; r == 0 && i < j->ntracks; i++) {
        j->tracks[i].duplicate = PQgetvalue(res, (int)i, 1)[0] != 't';
        if (j->tracks[i].duplicate) {
            ts[ndup++] = &j->tracks[i];
            if (j->tracks[i].entry)
                j->tracks[i].entry->skip = true;
        }
    }
    PQclear(res);
    res = NULL;
    if (r == 0 && ndup) {
        /* What the first publish of each known id recorded (it committed before our claim
         * gave way to it). */
        r = run_columns(st, &res, known_sql, 1, ndup, track_column, ts);
        if (r == 0 && (PQntuples(res) != (int)ndup || PQnfields(res) != 5))
            r = -EPROTO;
        for (size_t i = 0; r == 0 && i < ndup; i++) {
            int64_t recipients = 0;

            if (row_int(res, (int)i, 1, &ts[i]->seq) < 0 ||
                row_int(res, (int)i, 2, &recipients) < 0) {
                r = -EPROTO;
                break;
            }
            ts[i]->recipients = PQgetisnull(res, (int)i, 2) ? -1 : recipients;
            if (ts[i]->entry && !PQgetisnull(res, (int)i, 4))
                redeliver(ts[i], res, (int)i);
        }
        PQclear(res);
    }
    for (size_t i = 0; r == 0 && i < j->n; i++) {
        if (!j->entries[i].skip)
            ents[k++] = &j->entries[i];
    }
    if (r == 0 && k)
        r = write_chunk(st, ents, k);
    for (size_t i = 0; r == 0 && i < j->ntracks; i++) {
        if (!j->tracks[i].duplicate && j->tracks[i].entry)
            ts[nmade++] = &j->tracks[i];
    }
    if (r == 0 && nmade)
        r = run_columns(st, NULL, track_sql, 3, nmade, track_column, ts);
    free(ts);
    free(ents);
    return r;
}

/* Writes a job whose items carry ids, alone in a transaction, and calls it back. */
static void write_tracked(struct dw_inbox *ib, struct dw_store *st, struct job *j)
{
    size_t ndup = 0, nwritten = 0;
    int r = dw_store_tx(st, tracked_tx, j);

    if (r < 0) {
        /* Rolled back: nothing of it stands, even if write_chunk made messages. */
        for (size_t i = 0; i < j->n; i++) {
            if (j->entries[i].msg)
                dw_msg_unref(j->entries[i].msg);
            j->entries[i].msg = NULL;
        }
    }
    for (size_t i = 0; r == 0 && i < j->ntracks; i++)
        ndup += j->tracks[i].duplicate;
    for (size_t i = 0; i < j->n; i++)
        nwritten += !j->entries[i].skip;
    atomic_fetch_add_explicit(&ib->duplicates, ndup, memory_order_relaxed);
    if (nwritten || r < 0)
        count_write(ib, st, nwritten, r);
    dw_wake_batch_begin();
    j->done(j->arg, r);
    dw_wake_batch_end();
}

static void write_jobs(struct dw_inbox *ib, struct dw_store *st, struct job *jobs)
{
    while (jobs) {
        struct job *end = jobs;
        size_t total = 0;

        if (jobs->tracks) {
            end = jobs->next;
            write_tracked(ib, st, jobs);
        } else {
            /* As many whole untracked jobs as fit in one statement, at least one. */
            do {
                total += end->n;
                end = end->next;
            } while (end && !end->tracks && total + end->n <= DW_INBOX_WRITE_MAX);
            if (total > DW_INBOX_WRITE_MAX) {
                /* dw_inbox_submit refuses such jobs: cannot happen. */
                dw_panic("inbox job of %zu entries", total);
            }
            write_group(ib, st, jobs, end, total);
        }
        while (jobs != end) {
            struct job *next = jobs->next;

            free(jobs);
            jobs = next;
        }
    }
}

/* Takes the entries of list into the two columns of a grouped statement: per key, the highest
 * value. Returns how many keys. Frees list. */
static size_t fold_keyed(struct ack *list, char **cols, size_t *len, size_t *cap)
{
    size_t n = 0;

    while (list) {
        struct ack *a = list, *prev = a, *o;
        char seq[24];

        /* The highest value of a's key: the other entries of that key fold into a. */
        for (o = a->next; o; o = prev->next) {
            if (strcmp(o->user_id, a->user_id) == 0) {
                if (o->seq > a->seq)
                    a->seq = o->seq;
                prev->next = o->next;
                free(o);
            } else {
                prev = o;
            }
        }
        list = a->next;
        snprintf(seq, sizeof(seq), "%" PRId64, a->seq);
        join(&cols[0], &len[0], &cap[0], a->user_id, strlen(a->user_id), !list);
        join(&cols[1], &len[1], &cap[1], seq, strlen(seq), !list);
        free(a);
        n++;
    }
    return n;
}

/* Records the acks (sql ack_sql) or the publish ids' recipients (recipients_sql) taken from the
 * queue, in one statement. Returns how many keys, and *ok. */
static size_t write_keyed(struct dw_store *st, struct ack *list, const char *sql, bool *ok)
{
    char *cols[2] = {NULL, NULL};
    size_t len[2] = {0, 0}, cap[2] = {0, 0};
    const char *params[2];
    size_t n = fold_keyed(list, cols, len, cap);

    params[0] = cols[0];
    params[1] = cols[1];
    *ok = dw_store_run(st, sql, 2, params) == 0;
    free(cols[0]);
    free(cols[1]);
    return n;
}

/* Records the acks taken from the queue, in one statement: per user, the highest seq. */
static void write_acks(struct dw_inbox *ib, struct dw_store *st, struct ack *acks)
{
    bool ok;
    size_t n = write_keyed(st, acks, ack_sql, &ok);

    if (ok) {
        atomic_fetch_add_explicit(&ib->acks_done, n, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&ib->acks_failed, n, memory_order_relaxed);
        dw_log(DW_LOG_DEBUG, "cannot record %zu acks: %s", n, dw_store_error(st));
    }
}

/* Records the recipients of first publishes of ids (for their duplicates' answers). */
static void write_notes(struct dw_store *st, struct ack *notes)
{
    bool ok;
    size_t n = write_keyed(st, notes, recipients_sql, &ok);

    if (!ok)
        dw_log(DW_LOG_DEBUG, "cannot record the recipients of %zu publish ids: %s", n,
               dw_store_error(st));
}

/* ------------------------------------------------------------------------------------------
 * Replay pages
 * ------------------------------------------------------------------------------------------ */

bool dw_inbox_page_recovered(const struct dw_inbox_page *p)
{
    if (p->from > p->last_seq)
        return false; /* the client knows of messages this inbox never wrote */
    return p->from == p->last_seq || (p->first_seq > 0 && p->first_seq <= p->from + 1);
}

void dw_inbox_page_release(struct dw_inbox_page *p)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->msgs[i])
            dw_msg_unref(p->msgs[i]);
    }
    free(p->msgs);
    p->msgs = NULL;
    p->n = 0;
}

/* Fills the n pages of ps from res (read_sql's rows for them). */
static int fill_pages(struct dw_inbox_page **ps, size_t n, const PGresult *res)
{
    int rows = PQntuples(res);
    int row = 0;

    if (PQnfields(res) != 8)
        return -EPROTO;
    for (size_t k = 0; k < n; k++) {
        struct dw_inbox_page *p = ps[k];
        int start = row;
        int64_t ord;

        if (row >= rows || row_int(res, row, 0, &ord) < 0 || ord != (int64_t)k + 1)
            return -EPROTO;
        if (row_int(res, row, 1, &p->last_seq) < 0 || row_int(res, row, 2, &p->acked_seq) < 0 ||
            row_int(res, row, 3, &p->from) < 0 || row_int(res, row, 4, &p->first_seq) < 0)
            return -EPROTO;
        while (row < rows && row_int(res, row, 0, &ord) == 0 && ord == (int64_t)k + 1)
            row++;
        if (PQgetisnull(res, start, 5))
            continue; /* nothing after p->from */
        p->msgs = dw_xcalloc((size_t)(row - start), sizeof(struct dw_msg *));
        for (int r = start; r < row; r++) {
            int64_t seq;
            const char *text = PQgetvalue(res, r, 7);
            int type = dw_msg_type_parse(PQgetvalue(res, r, 6));
            struct dw_msg *m;

            if (row_int(res, r, 5, &seq) < 0 || seq < 1)
                return -EPROTO;
            /* The type only labels the stats: a name this build does not know counts as a
             * notification; the text is sent as it was stored. */
            m = dw_msg_new_text(type < 0 ? DW_MSG_NOTIFICATION : (enum dw_msg_type)type,
                                DW_MSG_F_CRITICAL, text, (size_t)PQgetlength(res, r, 7));
            m->seq = seq;
            p->msgs[p->n++] = m;
        }
        p->more = p->msgs[p->n - 1]->seq < p->last_seq;
    }
    return row == rows ? 0 : -EPROTO;
}

/* The columns of a read: user id, after, byte budget. */
static const char *page_column(const void *arg, size_t i, int col, char *buf, size_t size,
                               size_t *len)
{
    const struct dw_inbox_page *const *ps = arg;
    const struct dw_inbox_page *p = ps[i];

    if (col == 0) {
        *len = strlen(p->user_id);
        return p->user_id;
    }
    if (col == 1)
        *len = (size_t)snprintf(buf, size, "%" PRId64, p->after);
    else
        *len = (size_t)snprintf(buf, size, "%zu", p->max_bytes);
    return buf;
}

/* Answers the n pages of ps (at most DW_INBOX_READ_GROUP) with one statement, and calls each
 * reader back. */
static void read_group(struct dw_inbox *ib, struct dw_store *st, struct dw_inbox_page **ps,
                       size_t n)
{
    PGresult *res = NULL;
    int r = run_columns(st, &res, read_sql, 3, n, page_column, ps);

    if (r == 0 && (r = fill_pages(ps, n, res)) < 0)
        dw_log(DW_LOG_ERROR, "inbox read: unexpected rows");
    PQclear(res);

    dw_wake_batch_begin();
    for (size_t k = 0; k < n; k++) {
        struct dw_inbox_page *p = ps[k];

        p->rc = r;
        if (r < 0) {
            dw_inbox_page_release(p);
            atomic_fetch_add_explicit(&ib->replays_failed, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&ib->replayed, p->n, memory_order_relaxed);
            if (p->first) {
                atomic_fetch_add_explicit(&ib->replays, 1, memory_order_relaxed);
                if (!dw_inbox_page_recovered(p))
                    atomic_fetch_add_explicit(&ib->not_recovered, 1, memory_order_relaxed);
            }
        }
        p->done(p);
    }
    dw_wake_batch_end();
}

/* Reads the pages taken from the queue, DW_INBOX_READ_GROUP per statement. */
static void read_pages(struct dw_inbox *ib, struct dw_store *st, struct dw_inbox_page *pages)
{
    struct dw_inbox_page *group[DW_INBOX_READ_GROUP];

    while (pages) {
        size_t n = 0;

        while (pages && n < DW_INBOX_READ_GROUP) {
            group[n++] = pages;
            pages = pages->_next;
        }
        read_group(ib, st, group, n);
    }
}

int dw_inbox_read(struct dw_inbox *ib, struct dw_inbox_page *p)
{
    if (!dw_proto_user_id_is_valid(p->user_id))
        return -EINVAL;
    p->rc = 0;
    p->msgs = NULL;
    p->n = 0;
    p->more = false;
    p->last_seq = p->acked_seq = p->first_seq = p->from = 0;
    p->_next = NULL;
    pthread_mutex_lock(&ib->lock);
    if (ib->stopping) {
        pthread_mutex_unlock(&ib->lock);
        return -ESHUTDOWN;
    }
    *ib->pages_tail = p;
    ib->pages_tail = &p->_next;
    pthread_cond_signal(&ib->cond);
    pthread_mutex_unlock(&ib->lock);
    return 0;
}

static void *inbox_main(void *arg)
{
    struct dw_inbox *ib = arg;
    struct dw_store *st;

    dw_thread_set_role(DW_THREAD_WORKER); /* blocks on libpq */
    dw_rcu_register();
    st = dw_db_store(ib->db);
    for (;;) {
        struct job *jobs;
        struct ack *acks, *notes;
        struct dw_inbox_page *pages;
        bool stop;

        pthread_mutex_lock(&ib->lock);
        while (!ib->head && !ib->acks && !ib->notes && !ib->pages && !ib->stopping)
            pthread_cond_wait(&ib->cond, &ib->lock);
        jobs = ib->head;
        ib->head = ib->tail = NULL;
        acks = ib->acks;
        ib->acks = NULL;
        notes = ib->notes;
        ib->notes = NULL;
        pages = ib->pages;
        ib->pages = NULL;
        ib->pages_tail = &ib->pages;
        stop = ib->stopping;
        pthread_mutex_unlock(&ib->lock);
        /* The recipients of first publishes before the jobs: a retry queued after a first
         * publish's answer finds its delivery recorded (else it would send it again). Writes
         * before reads: a page read after them sees them. */
        if (notes)
            write_notes(st, notes);
        write_jobs(ib, st, jobs);
        if (acks)
            write_acks(ib, st, acks);
        read_pages(ib, st, pages);
        if (stop && !jobs && !acks && !notes && !pages)
            break;
    }
    dw_rcu_unregister();
    return NULL;
}

struct dw_inbox *dw_inbox_start(struct dw_db *db, struct dw_hub *hub)
{
    struct dw_inbox *ib = dw_xcalloc(1, sizeof(*ib));
    int err;

    ib->db = db;
    ib->hub = hub;
    ib->pages_tail = &ib->pages;
    pthread_mutex_init(&ib->lock, NULL);
    pthread_cond_init(&ib->cond, NULL);
    err = pthread_create(&ib->thread, NULL, inbox_main, ib);
    if (err) {
        dw_log(DW_LOG_ERROR, "cannot start the inbox thread: %s", strerror(err));
        pthread_mutex_destroy(&ib->lock);
        pthread_cond_destroy(&ib->cond);
        free(ib);
        return NULL;
    }
    return ib;
}

/* Queues a job; -ESHUTDOWN once the inbox is stopping. */
static int queue_job(struct dw_inbox *ib, struct job *job)
{
    pthread_mutex_lock(&ib->lock);
    if (ib->stopping) {
        pthread_mutex_unlock(&ib->lock);
        free(job);
        return -ESHUTDOWN;
    }
    if (ib->tail)
        ib->tail->next = job;
    else
        ib->head = job;
    ib->tail = job;
    pthread_cond_signal(&ib->cond);
    pthread_mutex_unlock(&ib->lock);
    return 0;
}

static struct job *job_new(struct dw_inbox_entry *entries, size_t n, dw_inbox_done_fn *done,
                           void *arg)
{
    struct job *job = dw_xcalloc(1, sizeof(*job));

    job->entries = entries;
    job->n = n;
    job->done = done;
    job->arg = arg;
    return job;
}

int dw_inbox_submit(struct dw_inbox *ib, struct dw_inbox_entry *entries, size_t n,
                    dw_inbox_done_fn *done, void *arg)
{
    if (n == 0 || n > DW_INBOX_WRITE_MAX)
        return -EINVAL;
    return queue_job(ib, job_new(entries, n, done, arg));
}

int dw_inbox_submit_tracked(struct dw_inbox *ib, struct dw_inbox_entry *entries, size_t n,
                            struct dw_inbox_track *tracks, size_t ntracks, dw_inbox_done_fn *done,
                            void *arg)
{
    struct job *job;

    if (n > DW_INBOX_WRITE_MAX || ntracks == 0 || ntracks > DW_INBOX_WRITE_MAX)
        return -EINVAL;
    job = job_new(entries, n, done, arg);
    job->tracks = tracks;
    job->ntracks = ntracks;
    return queue_job(ib, job);
}

bool dw_inbox_id_is_valid(const char *id)
{
    return dw_proto_user_id_is_valid(id); /* the same characters, and DW_USER_ID_MAX == 128 */
}

/* One message sent through the inbox with nothing waiting for it (dw_inbox_send). */
struct lone {
    struct dw_inbox *ib;
    struct dw_inbox_entry entry;
};

static void lone_done(void *arg, int rc)
{
    struct lone *l = arg;

    if (rc == 0)
        dw_inbox_deliver(l->ib->hub, &l->entry);
    dw_inbox_entry_release(&l->entry);
    free(l);
}

int dw_inbox_send(struct dw_inbox *ib, const char *user_id, enum dw_msg_type type,
                  struct json_object *obj)
{
    struct lone *l;
    int r;

    if (!user_id || !dw_proto_user_id_is_valid(user_id))
        return -EINVAL;
    l = dw_xmalloc(sizeof(*l));
    l->ib = ib;
    dw_inbox_entry_init(&l->entry, user_id, type, obj);
    r = dw_inbox_submit(ib, &l->entry, 1, lone_done, l);
    if (r < 0) {
        dw_inbox_entry_release(&l->entry);
        free(l);
    }
    return r;
}

/* Queues key's value on *list (acks or notes); -ESHUTDOWN once the inbox is stopping. */
static int queue_keyed(struct dw_inbox *ib, struct ack **list, const char *key, int64_t value)
{
    struct ack *a = dw_xmalloc(sizeof(*a));

    a->seq = value;
    snprintf(a->user_id, sizeof(a->user_id), "%s", key);
    pthread_mutex_lock(&ib->lock);
    if (ib->stopping) {
        pthread_mutex_unlock(&ib->lock);
        free(a);
        return -ESHUTDOWN;
    }
    a->next = *list;
    *list = a;
    pthread_cond_signal(&ib->cond);
    pthread_mutex_unlock(&ib->lock);
    return 0;
}

int dw_inbox_ack(struct dw_inbox *ib, const char *user_id, int64_t seq)
{
    if (!user_id || !dw_proto_user_id_is_valid(user_id) || seq < 1)
        return -EINVAL;
    return queue_keyed(ib, &ib->acks, user_id, seq);
}

void dw_inbox_note_recipients(struct dw_inbox *ib, const char *id, int64_t recipients)
{
    if (dw_inbox_id_is_valid(id))
        queue_keyed(ib, &ib->notes, id, recipients);
}

void dw_inbox_counts(const struct dw_inbox *ib, struct dw_inbox_counts *out)
{
    memset(out, 0, sizeof(*out));
    if (!ib)
        return;
    out->written = atomic_load_explicit(&ib->written, memory_order_relaxed);
    out->failed = atomic_load_explicit(&ib->failed, memory_order_relaxed);
    out->writes = atomic_load_explicit(&ib->writes, memory_order_relaxed);
    out->acks = atomic_load_explicit(&ib->acks_done, memory_order_relaxed);
    out->acks_failed = atomic_load_explicit(&ib->acks_failed, memory_order_relaxed);
    out->replays = atomic_load_explicit(&ib->replays, memory_order_relaxed);
    out->replayed = atomic_load_explicit(&ib->replayed, memory_order_relaxed);
    out->replays_failed = atomic_load_explicit(&ib->replays_failed, memory_order_relaxed);
    out->not_recovered = atomic_load_explicit(&ib->not_recovered, memory_order_relaxed);
    out->duplicates = atomic_load_explicit(&ib->duplicates, memory_order_relaxed);
}

void dw_inbox_stop(struct dw_inbox *ib)
{
    if (!ib)
        return;
    pthread_mutex_lock(&ib->lock);
    ib->stopping = true;
    pthread_cond_broadcast(&ib->cond);
    pthread_mutex_unlock(&ib->lock);
    pthread_join(ib->thread, NULL);
    pthread_mutex_destroy(&ib->lock);
    pthread_cond_destroy(&ib->cond);
    free(ib);
}
