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

/* $1 user ids, $2 seqs, joined with SEP, one per user. */
static const char ack_sql[] =
    "UPDATE alert_inbox a SET acked_at = now()"
    " FROM unnest(string_to_array($1, E'\\x1e'), string_to_array($2, E'\\x1e')::bigint[])"
    "  AS x(u, s)"
    " WHERE a.user_id = x.u AND a.seq <= x.s AND a.acked_at IS NULL";

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

/* One statement for the n entries that ents points to (at most DW_INBOX_WRITE_MAX): they need
 * not be side by side (the inbox's thread writes the entries of several jobs together). */
static int write_chunk(struct dw_store *st, struct dw_inbox_entry *const *ents, size_t n)
{
    char *cols[3] = {NULL, NULL, NULL};
    size_t len[3] = {0, 0, 0}, cap[3] = {0, 0, 0};
    const char *params[3];
    int64_t *seqs = NULL;
    PGresult *res = NULL;
    int r;

    for (size_t i = 0; i < n; i++) {
        const struct dw_inbox_entry *e = ents[i];
        const char *type = dw_msg_type_name(e->type);
        bool last = i + 1 == n;

        join(&cols[0], &len[0], &cap[0], e->user_id, strlen(e->user_id), last);
        join(&cols[1], &len[1], &cap[1], type, strlen(type), last);
        join(&cols[2], &len[2], &cap[2], e->text, e->len, last);
    }
    for (int c = 0; c < 3; c++)
        params[c] = cols[c];

    r = dw_store_exec(st, &res, write_sql, 3, params);
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
    for (int c = 0; c < 3; c++)
        free(cols[c]);
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
    dw_inbox_done_fn *done;
    void *arg;
};

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
    bool stopping;           /* under lock */
    _Atomic uint64_t written, failed, writes, acks_done, acks_failed;
    int64_t last_warned; /* thread only: monotonic ns of the last failure logged */
};

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
    /* Each job delivers its own messages and answers; one wake of the I/O thread for all. */
    dw_wake_batch_begin();
    for (struct job *j = first; j != end; j = j->next)
        j->done(j->arg, r);
    dw_wake_batch_end();
}

static void write_jobs(struct dw_inbox *ib, struct dw_store *st, struct job *jobs)
{
    while (jobs) {
        struct job *end = jobs;
        size_t total = 0;

        /* As many whole jobs as fit in one statement, at least one. */
        do {
            total += end->n;
            end = end->next;
        } while (end && total + end->n <= DW_INBOX_WRITE_MAX);
        if (total > DW_INBOX_WRITE_MAX) {
            /* dw_inbox_submit refuses such jobs: cannot happen. */
            dw_panic("inbox job of %zu entries", total);
        }
        write_group(ib, st, jobs, end, total);
        while (jobs != end) {
            struct job *next = jobs->next;

            free(jobs);
            jobs = next;
        }
    }
}

/* Records the acks taken from the queue, in one statement: per user, the highest seq. */
static void write_acks(struct dw_inbox *ib, struct dw_store *st, struct ack *acks)
{
    char *cols[2] = {NULL, NULL};
    size_t len[2] = {0, 0}, cap[2] = {0, 0};
    const char *params[2];
    uint64_t n = 0;

    while (acks) {
        struct ack *a = acks, *prev = a, *o;
        char seq[24];

        /* The highest seq of a's user: the other entries of that user fold into a. */
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
        acks = a->next;
        snprintf(seq, sizeof(seq), "%" PRId64, a->seq);
        join(&cols[0], &len[0], &cap[0], a->user_id, strlen(a->user_id), !acks);
        join(&cols[1], &len[1], &cap[1], seq, strlen(seq), !acks);
        free(a);
        n++;
    }
    params[0] = cols[0];
    params[1] = cols[1];
    if (dw_store_run(st, ack_sql, 2, params) == 0) {
        atomic_fetch_add_explicit(&ib->acks_done, n, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&ib->acks_failed, n, memory_order_relaxed);
        dw_log(DW_LOG_DEBUG, "cannot record %" PRIu64 " acks: %s", n, dw_store_error(st));
    }
    free(cols[0]);
    free(cols[1]);
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
        struct ack *acks;
        bool stop;

        pthread_mutex_lock(&ib->lock);
        while (!ib->head && !ib->acks && !ib->stopping)
            pthread_cond_wait(&ib->cond, &ib->lock);
        jobs = ib->head;
        ib->head = ib->tail = NULL;
        acks = ib->acks;
        ib->acks = NULL;
        stop = ib->stopping;
        pthread_mutex_unlock(&ib->lock);
        write_jobs(ib, st, jobs);
        if (acks)
            write_acks(ib, st, acks);
        if (stop && !jobs && !acks)
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

int dw_inbox_submit(struct dw_inbox *ib, struct dw_inbox_entry *entries, size_t n,
                    dw_inbox_done_fn *done, void *arg)
{
    struct job *job;

    if (n == 0 || n > DW_INBOX_WRITE_MAX)
        return -EINVAL;
    job = dw_xmalloc(sizeof(*job));
    job->next = NULL;
    job->entries = entries;
    job->n = n;
    job->done = done;
    job->arg = arg;
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

int dw_inbox_ack(struct dw_inbox *ib, const char *user_id, int64_t seq)
{
    struct ack *a;

    if (!user_id || !dw_proto_user_id_is_valid(user_id) || seq < 1)
        return -EINVAL;
    a = dw_xmalloc(sizeof(*a));
    a->seq = seq;
    snprintf(a->user_id, sizeof(a->user_id), "%s", user_id);
    pthread_mutex_lock(&ib->lock);
    if (ib->stopping) {
        pthread_mutex_unlock(&ib->lock);
        free(a);
        return -ESHUTDOWN;
    }
    a->next = ib->acks;
    ib->acks = a;
    pthread_cond_signal(&ib->cond);
    pthread_mutex_unlock(&ib->lock);
    return 0;
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
