/*
 * metrics — DESIGN: GET /metrics, the Prometheus text format (metrics.h), rendered on the I/O
 * thread from counters that each live with the thread that writes them, so that nothing on
 * the hot path takes a lock (docs/architecture.md, "Metrics"):
 *
 *   the I/O thread's   srv->io, srv->refusals, srv->metrics (server_int.h): plain integers,
 *                      since this thread both writes them and renders the page;
 *   the hub's          the publish counters (relaxed atomics, dw_hub_get_published);
 *   other threads'     the inbox's, the retention sweeps', the bus's, the database health's
 *                      (their own snapshots), and the workers' (monitor rounds, trip plans:
 *                      dw_metrics_workers below, relaxed atomic adds from any worker).
 *
 * The hot path's share: one clock read when a published message is built (events.c fan_out,
 * inbox.c for a durable one once written, bus.c for one from another node), once whatever its
 * recipients, and one per write (conn.c write_frames); per message written, an add by type
 * and, for a published message, a latency bucket found by a shift and a count of leading
 * zeros (dw__metrics_written). Closes
 * are counted by cause at LWS_CALLBACK_CLOSED from the connection's close state, so the close
 * paths themselves are unchanged (close_cause).
 *
 * A scrape costs a walk over the connections (outbox depth: one relaxed load each; the sum
 * and the deepest queue, not a histogram, which would cost the same walk and more page) and a
 * page of about 15 KB; every label has a fixed set of values (reasons, types, monitors), never
 * a user or a channel.
 */
#define DW_LOG_MODULE "metrics"
#include "dealwire/metrics.h"
#include "server_int.h"
#include "conn_int.h"
#include "dealwire/bus.h"
#include "dealwire/inbox.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/retention.h"
#include "dealwire/store.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==========================================================================================
 * The text writer
 */

static void reserve(struct dw_metrics_buf *b, size_t more)
{
    size_t need = b->len + more + 1;

    if (need <= b->cap)
        return;
    b->cap = b->cap ? b->cap : 4096;
    while (b->cap < need)
        b->cap *= 2;
    b->data = dw_xrealloc(b->data, b->cap);
}

static void put(struct dw_metrics_buf *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(struct dw_metrics_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putf(struct dw_metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void putf(struct dw_metrics_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        dw_panic("vsnprintf failed");
    if ((size_t)n < sizeof(small)) {
        put(b, small, (size_t)n);
        return;
    }
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* s with \ and newline escaped, and " too when in a label value (the format's two escapes). */
static void put_escaped(struct dw_metrics_buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(b, "\\\\");
        else if (*s == '\n')
            puts_(b, "\\n");
        else if (*s == '"' && quote)
            puts_(b, "\\\"");
        else
            put(b, s, 1);
    }
}

/* A number as Prometheus reads it: integers exactly, others with 17 significant digits. */
static void put_number(struct dw_metrics_buf *b, double v)
{
    if (isnan(v))
        puts_(b, "NaN");
    else if (isinf(v))
        puts_(b, v > 0 ? "+Inf" : "-Inf");
    else if (fabs(v) < 9e15 && v == (double)(long long)v)
        putf(b, "%lld", (long long)v);
    else
        putf(b, "%.17g", v);
}

/* {k="v",...} with extra (an already formatted le="..." or NULL) last; nothing when empty. */
static void put_labels(struct dw_metrics_buf *b, const char *const *labels, const char *extra)
{
    bool any = false;

    for (size_t i = 0; labels && labels[i]; i += 2) {
        puts_(b, any ? "," : "{");
        puts_(b, labels[i]);
        puts_(b, "=\"");
        put_escaped(b, labels[i + 1], true);
        puts_(b, "\"");
        any = true;
    }
    if (extra) {
        puts_(b, any ? "," : "{");
        puts_(b, extra);
        any = true;
    }
    if (any)
        puts_(b, "}");
}

void dw_metrics_write_family(struct dw_metrics_buf *b, const char *name, const char *type,
                             const char *help)
{
    putf(b, "# HELP %s ", name);
    put_escaped(b, help, false);
    putf(b, "\n# TYPE %s %s\n", name, type);
}

void dw_metrics_write_sample(struct dw_metrics_buf *b, const char *name, const char *const *labels,
                             double value)
{
    puts_(b, name);
    put_labels(b, labels, NULL);
    puts_(b, " ");
    put_number(b, value);
    puts_(b, "\n");
}

void dw_metrics_write_histogram(struct dw_metrics_buf *b, const char *name,
                                const char *const *labels, const double *bounds, size_t n,
                                const uint64_t *counts, double sum)
{
    uint64_t cumulative = 0;
    char le[48];

    for (size_t i = 0; i <= n; i++) {
        cumulative += counts[i];
        if (i < n)
            snprintf(le, sizeof(le), "le=\"%.9g\"", bounds[i]);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        putf(b, "%s_bucket", name);
        put_labels(b, labels, le);
        putf(b, " %llu\n", (unsigned long long)cumulative);
    }
    putf(b, "%s_sum", name);
    put_labels(b, labels, NULL);
    puts_(b, " ");
    put_number(b, sum);
    putf(b, "\n%s_count", name);
    put_labels(b, labels, NULL);
    putf(b, " %llu\n", (unsigned long long)cumulative);
}

size_t dw_metrics_bucket(const double *bounds, size_t n, double v)
{
    size_t i = 0;

    while (i < n && v > bounds[i])
        i++;
    return i;
}

/* ==========================================================================================
 * What the workers count
 */

const double dw_metrics_work_bounds[DW_METRICS_WORK_BOUNDS] = {0.001, 0.005, 0.01, 0.025, 0.05,
                                                               0.1,   0.25,  0.5,  1,     5};

static struct dw_metrics_workers workers;

static void work_observe(struct dw_metrics_work_hist *h, int64_t ns)
{
    size_t i;

    if (ns < 0)
        ns = 0;
    i = dw_metrics_bucket(dw_metrics_work_bounds, DW_METRICS_WORK_BOUNDS, (double)ns / 1e9);
    /* Relaxed: each field is a count on its own; nothing else is published through them. */
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)ns, memory_order_relaxed);
}

void dw_metrics_monitor_round(enum dw_metrics_monitor mon, int rc, int64_t ns)
{
    enum dw_metrics_result result = rc == 0         ? DW_METRICS_OK
                                    : rc == -EAGAIN ? DW_METRICS_DB_UNAVAILABLE
                                                    : DW_METRICS_FAILED;

    if ((unsigned)mon >= DW_METRICS_MON__COUNT)
        return;
    atomic_fetch_add_explicit(&workers.rounds[mon][result], 1, memory_order_relaxed);
    work_observe(&workers.round[mon], ns);
}

void dw_metrics_plan(enum dw_metrics_plan outcome, int64_t ns)
{
    if ((unsigned)outcome >= DW_METRICS_PLAN__COUNT)
        return;
    atomic_fetch_add_explicit(&workers.plans[outcome], 1, memory_order_relaxed);
    work_observe(&workers.plan, ns);
}

const struct dw_metrics_workers *dw_metrics_workers_read(void)
{
    return &workers;
}

/* ==========================================================================================
 * What the I/O thread counts: closes by cause, connection durations
 */

/* Upper bounds of the connection duration buckets, in seconds: a second to a day. */
static const double duration_bounds[DW_DURATION_BUCKETS] = {1,    10,   60,    300,   900,
                                                            1800, 3600, 14400, 43200, 86400};

static const char *const cause_names[DW_CLOSE__CAUSES] = {
    [DW_CLOSE_CLIENT] = "client_close",
    [DW_CLOSE_LOST] = "connection_lost",
    [DW_CLOSE_HEARTBEAT] = "heartbeat_timeout",
    [DW_CLOSE_SLOW] = "slow_consumer",
    [DW_CLOSE_TOKEN_EXPIRED] = "token_expired",
    [DW_CLOSE_RATE_LIMIT] = "rate_limit",
    [DW_CLOSE_TOO_LARGE] = "message_too_large",
    [DW_CLOSE_SHUTDOWN] = "shutdown",
    [DW_CLOSE_OTHER] = "other",
};

/* Why conn closed, from where its close got to: a client's close frame (PEER_CLOSED), a close
 * of ours (its reason, the close frame's text, conn.c begin_close; or the heartbeat's
 * hang-up), or neither (still OPEN, or hung up after a failed write): the connection was lost.
 * A close reason conn.c adds later counts as "other" until it is named here. */
static enum dw_close_cause close_cause(const struct dw_conn_io *io)
{
    static const struct {
        const char *reason;
        enum dw_close_cause cause;
    } reasons[] = {
        {DW_CLOSE_REASON_STALE, DW_CLOSE_HEARTBEAT}, {"slow consumer", DW_CLOSE_SLOW},
        {"token expired", DW_CLOSE_TOKEN_EXPIRED},   {"rate limit exceeded", DW_CLOSE_RATE_LIMIT},
        {"message too large", DW_CLOSE_TOO_LARGE},   {"server shutting down", DW_CLOSE_SHUTDOWN},
    };

    if (io->state == DW_CONN_PEER_CLOSED)
        return DW_CLOSE_CLIENT;
    if (io->state == DW_CONN_OPEN || !io->close_reason)
        return DW_CLOSE_LOST;
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        if (strcmp(io->close_reason, reasons[i].reason) == 0)
            return reasons[i].cause;
    }
    return DW_CLOSE_OTHER;
}

void dw__metrics_conn_closed(struct dw_server *srv, struct dw_conn *conn)
{
    struct dw_io_metrics *mx = &srv->metrics;
    int64_t lived = dw_now_realtime_ns() - conn->io.connected_at;

    if (lived < 0)
        lived = 0; /* the clock was set back */
    mx->closes[close_cause(&conn->io)]++;
    mx->duration[dw_metrics_bucket(duration_bounds, DW_DURATION_BUCKETS, (double)lived / 1e9)]++;
    mx->duration_sum_ns += (uint64_t)lived;
}

/* ==========================================================================================
 * The page
 */

#define NS_TO_S(ns) ((double)(ns) / 1e9)

static void counter(struct dw_metrics_buf *b, const char *name, const char *help, uint64_t v)
{
    dw_metrics_write_family(b, name, "counter", help);
    dw_metrics_write_sample(b, name, NULL, (double)v);
}

/* Counters without labels, one family each. */
struct counter_row {
    const char *name, *help;
    uint64_t v;
};

static void counters(struct dw_metrics_buf *b, const struct counter_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        counter(b, rows[i].name, rows[i].help, rows[i].v);
}

static void gauge(struct dw_metrics_buf *b, const char *name, const char *help, double v)
{
    dw_metrics_write_family(b, name, "gauge", help);
    dw_metrics_write_sample(b, name, NULL, v);
}

/* One sample with a single label. */
static void labelled(struct dw_metrics_buf *b, const char *name, const char *label,
                     const char *value, uint64_t v)
{
    const char *const labels[] = {label, value, NULL};

    dw_metrics_write_sample(b, name, labels, (double)v);
}

/* A counter family by message type: one sample per type from first to last (enum
 * dw_msg_type), v indexed by type. */
static void by_type(struct dw_metrics_buf *b, const char *name, const char *help, const uint64_t *v,
                    int first, int last)
{
    dw_metrics_write_family(b, name, "counter", help);
    for (int t = first; t <= last; t++)
        labelled(b, name, "type", dw_msg_type_name(t), v[t]);
}

static void work_histogram(struct dw_metrics_buf *b, const char *name, const char *const *labels,
                           const struct dw_metrics_work_hist *h)
{
    uint64_t counts[DW_METRICS_WORK_BOUNDS + 1];

    for (size_t i = 0; i <= DW_METRICS_WORK_BOUNDS; i++)
        counts[i] = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    dw_metrics_write_histogram(b, name, labels, dw_metrics_work_bounds, DW_METRICS_WORK_BOUNDS,
                               counts,
                               NS_TO_S(atomic_load_explicit(&h->sum_ns, memory_order_relaxed)));
}

static void build_info(struct dw_server *srv, struct dw_metrics_buf *b)
{
    const char *const labels[] = {"version", DW_VERSION, "libwebsockets", lws_get_library_version(),
                                  NULL};

    dw_metrics_write_family(b, "dealwire_build_info", "gauge",
                            "Always 1; the labels say which build of dealwire runs.");
    dw_metrics_write_sample(b, "dealwire_build_info", labels, 1);
    gauge(b, "dealwire_start_time_seconds", "When the daemon started, in seconds since the epoch.",
          NS_TO_S(srv->started_at));
}

static void connections(struct dw_server *srv, struct dw_metrics_buf *b)
{
    const struct dw_io_metrics *mx = &srv->metrics;

    gauge(b, "dealwire_connections_open", "WebSocket client connections open now.",
          (double)dw_hub_connection_count(srv->hub));
    gauge(b, "dealwire_users_connected", "Distinct users with a connection open now.",
          (double)dw_hub_user_count(srv->hub));
    gauge(b, "dealwire_channels", "Channels with at least one subscriber now.",
          (double)dw_hub_channel_count(srv->hub));
    gauge(b, "dealwire_sockets_open",
          "Sockets accepted and not yet closed (clients, API requests, publishers).",
          (double)srv->sockets);
    gauge(b, "dealwire_publish_sockets_open", "/ws/publish sockets open now.",
          (double)dw__stream_count(srv));
    counter(b, "dealwire_connections_opened_total", "WebSocket client connections established.",
            srv->io.opened);
    dw_metrics_write_family(b, "dealwire_connections_closed_total", "counter",
                            "WebSocket client connections closed, by reason.");
    for (int i = 0; i < DW_CLOSE__CAUSES; i++)
        labelled(b, "dealwire_connections_closed_total", "reason", cause_names[i], mx->closes[i]);
    dw_metrics_write_family(
        b, "dealwire_connection_duration_seconds", "histogram",
        "How long WebSocket client connections lasted, counted at their close.");
    dw_metrics_write_histogram(b, "dealwire_connection_duration_seconds", NULL, duration_bounds,
                               DW_DURATION_BUCKETS, mx->duration, NS_TO_S(mx->duration_sum_ns));
}

static void messages(struct dw_server *srv, struct dw_metrics_buf *b)
{
    const struct dw_io_metrics *mx = &srv->metrics;
    struct dw_hub_published pub;
    double bounds[DW_LATENCY_BUCKETS];
    uint64_t queued = 0, deepest = 0;
    struct dw_conn *conn;

    dw_hub_get_published(srv->hub, &pub);
    by_type(b, "dealwire_messages_published_total",
            "Messages published (API, /ws/publish, monitors, planner, other nodes), by type, once "
            "each whatever their recipients.",
            pub.by_type, DW_MSG_DEAL_ALERT, DW_MSG_NOTIFICATION);
    counter(b, "dealwire_messages_broadcast_total", "Messages published to every connection.",
            pub.broadcasts);
    by_type(b, "dealwire_messages_sent_total", "Frames written to client sockets, by message type.",
            mx->sent_by_type, 0, DW_MSG__COUNT - 1);
    by_type(b, "dealwire_messages_dropped_total",
            "Messages dropped by full outboxes (slow consumers, or a connection closed for "
            "cause), by message type.",
            mx->dropped_by_type, 0, DW_MSG__COUNT - 1);
    by_type(b, "dealwire_messages_failed_total",
            "Messages not delivered: in a write that failed, or still queued when the connection "
            "closed, by message type.",
            mx->failed_by_type, 0, DW_MSG__COUNT - 1);

    dw_metrics_write_family(b, "dealwire_delivery_latency_seconds", "histogram",
                            "From a published message's creation (once the publish was accepted; "
                            "a durable one once the inbox wrote it) to its write to a client "
                            "socket, per recipient; replays excluded.");
    for (int i = 0; i < DW_LATENCY_BUCKETS; i++)
        bounds[i] = (double)((uint64_t)1 << (DW_LATENCY_SHIFT + i)) / 1e9;
    dw_metrics_write_histogram(b, "dealwire_delivery_latency_seconds", NULL, bounds,
                               DW_LATENCY_BUCKETS, mx->latency, NS_TO_S(mx->latency_sum_ns));

    /* One relaxed load per connection: the scrape's only walk. */
    dw_rlist_for_each_entry(conn, dw__hub_all(srv->hub), struct dw_conn, all_link) {
        uint64_t n = dw_outbox_queued(&conn->outbox);

        queued += n;
        if (n > deepest)
            deepest = n;
    }
    gauge(b, "dealwire_outbox_messages", "Messages queued for client connections, all together.",
          (double)queued);
    gauge(b, "dealwire_outbox_max_messages", "Messages queued for the most behind connection.",
          (double)deepest);
}

static void refusals(struct dw_server *srv, struct dw_metrics_buf *b)
{
    const struct dw_refusals *r = &srv->refusals;
    const struct {
        const char *reason;
        uint64_t n;
    } rows[] = {
        {"auth", r->auth},
        {"origin", r->origin},
        {"per_ip", r->per_ip},
        {"capacity", r->capacity},
        {"per_user", r->per_user},
        {"banned", r->banned},
        {"proxy_header", r->proxy_header},
        {"api_auth", r->api_auth},
        {"rate_limited_message", r->rate_limited},
        {"private_channel", r->private_channel},
        {"deadline", r->deadline},
        {"body_memory", r->body_memory},
        {"publish_socket", srv->streams.refused},
    };

    dw_metrics_write_family(b, "dealwire_refusals_total", "counter",
                            "What the limits and checks refused, by reason (closes of open "
                            "connections are dealwire_connections_closed_total's).");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        labelled(b, "dealwire_refusals_total", "reason", rows[i].reason, rows[i].n);
    counter(b, "dealwire_socket_events_deferred_total",
            "Socket events put off to a later pass of the event loop (a long pass).",
            srv->deferrals);
}

static void workers_page(struct dw_metrics_buf *b)
{
    static const char *const mon_names[DW_METRICS_MON__COUNT] = {"hot_deals", "trending",
                                                                 "price_watches", "demo_activity"};
    static const char *const results[DW_METRICS__RESULTS] = {"ok", "failed", "db_unavailable"};
    static const char *const outcomes[DW_METRICS_PLAN__COUNT] = {"found", "none_fits", "invalid",
                                                                 "failed"};
    const struct dw_metrics_workers *w = dw_metrics_workers_read();

    dw_metrics_write_family(b, "dealwire_monitor_rounds_total", "counter",
                            "Monitor rounds that ran, by monitor and result.");
    for (int m = 0; m < DW_METRICS_MON__COUNT; m++) {
        for (int r = 0; r < DW_METRICS__RESULTS; r++) {
            const char *const labels[] = {"monitor", mon_names[m], "result", results[r], NULL};

            dw_metrics_write_sample(
                b, "dealwire_monitor_rounds_total", labels,
                (double)atomic_load_explicit(&w->rounds[m][r], memory_order_relaxed));
        }
    }
    dw_metrics_write_family(b, "dealwire_monitor_round_duration_seconds", "histogram",
                            "How long monitor rounds took, by monitor.");
    for (int m = 0; m < DW_METRICS_MON__COUNT; m++) {
        const char *const labels[] = {"monitor", mon_names[m], NULL};

        work_histogram(b, "dealwire_monitor_round_duration_seconds", labels, &w->round[m]);
    }
    dw_metrics_write_family(b, "dealwire_plans_total", "counter",
                            "Trip plans (POST /api/ai/trip/plan), by outcome.");
    for (int o = 0; o < DW_METRICS_PLAN__COUNT; o++)
        labelled(b, "dealwire_plans_total", "outcome", outcomes[o],
                 atomic_load_explicit(&w->plans[o], memory_order_relaxed));
    dw_metrics_write_family(b, "dealwire_plan_duration_seconds", "histogram",
                            "How long trip plans took.");
    work_histogram(b, "dealwire_plan_duration_seconds", NULL, &w->plan);
}

/* With --db: the database's health, the inbox and its retention sweeps. */
static void database(struct dw_server *srv, struct dw_metrics_buf *b)
{
    struct dw_store_status st;
    struct dw_inbox_counts c;
    struct dw_retention_counts rc;

    if (!srv->db_health)
        return;
    dw_store_health_read(srv->db_health, &st);
    gauge(b, "dealwire_postgres_up", "1 when the last attempt reached PostgreSQL, else 0.",
          st.state == DW_STORE_UP ? 1 : 0);
    gauge(b, "dealwire_postgres_schema_ready", "1 once the schema migrations are applied.",
          st.schema_ready ? 1 : 0);
    counter(b, "dealwire_postgres_outages_total", "Times PostgreSQL became unreachable.",
            st.outages);
    if (!srv->inbox)
        return;
    dw_inbox_counts(srv->inbox, &c);
    dw_retention_counts(srv->retention, &rc);
    /* Measured by the retention sweeps: NaN until the first one. */
    gauge(b, "dealwire_inbox_depth_messages",
          "Inbox messages not acknowledged, at the last retention sweep (NaN before it).",
          rc.depth < 0 ? NAN : (double)rc.depth);
    gauge(b, "dealwire_inbox_dead_letters",
          "Rows of the dead-letter table, at the last retention sweep (NaN before it).",
          rc.dead_letters < 0 ? NAN : (double)rc.dead_letters);
    const struct counter_row rows[] = {
        {"dealwire_inbox_written_total", "Durable messages written to the inbox.", c.written},
        {"dealwire_inbox_write_failures_total", "Durable messages whose write failed.", c.failed},
        {"dealwire_inbox_replays_total", "Replays started (a connection, or a resume).", c.replays},
        {"dealwire_inbox_replayed_messages_total", "Messages read back for replays.", c.replayed},
        {"dealwire_inbox_replay_failures_total", "Replay pages that could not be read.",
         c.replays_failed},
        {"dealwire_inbox_duplicates_total", "Publish items not sent again: their id was known.",
         c.duplicates},
    };

    counters(b, rows, sizeof(rows) / sizeof(rows[0]));
}

/* With --redis: the nodes' bus. */
static void bus(struct dw_server *srv, struct dw_metrics_buf *b)
{
    struct dw_bus_counts c;

    if (!srv->bus)
        return;
    dw_bus_counts(srv->bus, &c);
    gauge(b, "dealwire_redis_up", "1 while both connections to Redis are up, else 0.",
          c.connected ? 1 : 0);
    const struct counter_row rows[] = {
        {"dealwire_redis_reconnects_total", "Connections to Redis made again after a loss.",
         c.reconnects},
        {"dealwire_bus_published_total", "Messages this node shared with the others.", c.published},
        {"dealwire_bus_received_total", "Messages from other nodes delivered here.", c.received},
        {"dealwire_bus_dropped_total", "Messages not shared: Redis away, or the bus's queue full.",
         c.dropped},
        {"dealwire_bus_operator_actions_sent_total",
         "Operator actions on a user this node shared with the others.", c.ops_sent},
        {"dealwire_bus_operator_actions_received_total",
         "Operator actions on a user from other nodes, done here.", c.ops_received},
        {"dealwire_bus_operator_actions_dropped_total",
         "Operator actions not shared (Redis away) or not done (the I/O thread's queue full).",
         c.ops_dropped},
    };

    counters(b, rows, sizeof(rows) / sizeof(rows[0]));
}

char *dw__metrics_render(struct dw_server *srv, size_t *len)
{
    struct dw_metrics_buf b = {0};

    DW_ASSERT_THREAD(DW_THREAD_IO);
    build_info(srv, &b);
    connections(srv, &b);
    messages(srv, &b);
    refusals(srv, &b);
    workers_page(&b);
    database(srv, &b);
    bus(srv, &b);
    *len = b.len;
    return b.data;
}
