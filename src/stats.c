/*
 * stats — DESIGN: the statistics documents of the HTTP API and of get_stats, in the seed's
 * shapes. Built on the I/O thread, which owns every per-connection counter, so reading them
 * needs no synchronization; the service-wide publish counters are atomics kept by the hub.
 *
 * The I/O thread serves everyone, so a document costs time linear in what it reports, and
 * what it reports is bounded (docs/security.md, "What one client can cost"): the lists are
 * cut at the constants below and say so ("..._truncated"). A user's subscriptions are the
 * union over its connections, found in one pass by marking each channel with the number of
 * the walk that listed it (dw_channel.seen), not by searching the list built so far.
 */
#define DW_LOG_MODULE "stats"
#include "server_int.h"
#include "dealwire/bus.h"
#include "dealwire/inbox.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/retention.h"
#include "dealwire/time.h"

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

/* uptime_by_user lists at most this many users; "uptime_by_user_truncated" says when more. */
#define UPTIME_USERS_MAX 1000
/* Channel names listed for one user (the union over its connections) and for one connection
 * in the connections document; "subscription_count" always gives the whole number. */
#define USER_SUBS_LISTED_MAX 1000
#define CONN_SUBS_LISTED_MAX 100
/* Channel names listed in the whole connections document: past it, connections list none. */
#define DOC_SUBS_LISTED_MAX 10000

static struct json_object *time_string(int64_t realtime_ns)
{
    char ts[DW_TIME_ISO_LEN];

    dw_time_format_iso(ts, realtime_ns);
    return json_object_new_string(ts);
}

static struct json_object *u64(uint64_t v)
{
    return json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

static void add_int(struct json_object *obj, const char *key, int v)
{
    json_object_object_add(obj, key, json_object_new_int(v));
}

/* What protects the port, every limit in force, and what each refused so far. */
static struct json_object *security_doc(struct dw_server *srv)
{
    const struct dw_config *cfg = srv->cfg;
    const struct dw_refusals *r = &srv->refusals;
    struct json_object *doc = json_object_new_object();
    struct json_object *limits = json_object_new_object();
    struct json_object *refused = json_object_new_object();

    json_object_object_add(doc, "tls", json_object_new_boolean(cfg->tls_cert != NULL));
    json_object_object_add(doc, "auth", json_object_new_string(dw_auth_mode(srv->auth)));
    json_object_object_add(doc, "api_token",
                           json_object_new_boolean(dw_auth_api_token_set(srv->auth)));
    json_object_object_add(doc, "origins_enforced",
                           json_object_new_boolean(dw_auth_origins_enforced(srv->auth)));

    add_int(limits, "max_connections", cfg->max_connections);
    add_int(limits, "max_connections_per_ip", cfg->max_connections_per_ip);
    json_object_object_add(limits, "trusted_proxies",
                           cfg->trusted_proxies ? json_object_new_string(cfg->trusted_proxies)
                                                : NULL);
    add_int(limits, "max_connections_per_user", cfg->max_connections_per_user);
    add_int(limits, "handshake_timeout", cfg->handshake_timeout);
    add_int(limits, "rate_limit", cfg->rate_limit);
    add_int(limits, "rate_burst", cfg->rate_burst);
    add_int(limits, "max_subscriptions", cfg->max_subscriptions);
    add_int(limits, "max_message_size", cfg->max_message_size);
    add_int(limits, "max_publish_size", cfg->max_publish_size);
    add_int(limits, "max_body_memory", cfg->max_body_memory);
    add_int(limits, "queue_size", cfg->queue_size);
    add_int(limits, "queue_bytes", cfg->queue_bytes);
    add_int(limits, "jwt_leeway", cfg->jwt_leeway);
    json_object_object_add(doc, "limits", limits);

    json_object_object_add(refused, "auth", u64(r->auth));
    json_object_object_add(refused, "origin", u64(r->origin));
    json_object_object_add(refused, "per_ip", u64(r->per_ip));
    json_object_object_add(refused, "per_user", u64(r->per_user));
    json_object_object_add(refused, "proxy_header", u64(r->proxy_header));
    json_object_object_add(refused, "capacity", u64(r->capacity));
    json_object_object_add(refused, "api_auth", u64(r->api_auth));
    json_object_object_add(refused, "rate_limited_messages", u64(r->rate_limited));
    json_object_object_add(refused, "rate_limit_closes", u64(r->rate_closes));
    json_object_object_add(refused, "private_channel", u64(r->private_channel));
    json_object_object_add(refused, "token_expired_closes", u64(r->token_expired));
    json_object_object_add(refused, "deadline_closes", u64(r->deadline));
    json_object_object_add(refused, "body_memory", u64(r->body_memory));
    json_object_object_add(refused, "banned", u64(r->banned));
    json_object_object_add(doc, "refused", refused);

    json_object_object_add(doc, "sockets", u64(srv->sockets));
    json_object_object_add(doc, "socket_events_deferred", u64(srv->deferrals));
    json_object_object_add(doc, "body_bytes",
                           u64(atomic_load_explicit(&srv->body_bytes, memory_order_relaxed)));
    json_object_object_add(doc, "client_addresses", u64(dw_ipcount_addresses(srv->ips)));
    return doc;
}

/* ns (0 or more) as seconds to the millisecond, written so: "4.722", where json-c would print
 * the double with 17 digits ("4.7215816610000001"). */
static struct json_object *seconds(int64_t ns)
{
    long long ms = ns > 0 ? (long long)(ns / 1000000) : 0;
    char text[32];
    struct json_object *num;

    snprintf(text, sizeof(text), "%lld.%03lld", ms / 1000, ms % 1000);
    num = json_object_new_double_s((double)ms / 1000.0, text);
    if (!num)
        dw_panic("out of memory");
    return num;
}

struct uptime_walk {
    struct json_object *doc;
    int64_t now;
    unsigned listed;
    bool truncated;
};

/* A user's uptime is that of its oldest connection, the first of its list (connections are
 * appended as they open). */
static bool add_uptime(struct dw_user *u, void *arg)
{
    struct uptime_walk *up = arg;
    struct dw_rlist *first = dw_rlist_first(&u->conns);
    struct dw_conn *oldest;

    if (first == &u->conns)
        return true; /* cannot happen: a user without connections leaves the map */
    if (up->listed == UPTIME_USERS_MAX) {
        up->truncated = true;
        return false;
    }
    oldest = caa_container_of(first, struct dw_conn, user_link);
    json_object_object_add(up->doc, u->id, seconds(up->now - oldest->io.connected_at));
    up->listed++;
    return true;
}

/* A figure a sweep measures: null until one did (and without a database). */
static struct json_object *measured(int64_t v)
{
    return v < 0 ? NULL : json_object_new_int64(v);
}

/* The nodes' bus (--redis): what this node shared and received, and what it caught up from
 * the inbox after the bus lost messages. */
/* /ws/publish (stream.c): the sockets and what they carried. */
static struct json_object *publish_sockets_doc(struct dw_server *srv)
{
    struct json_object *obj = json_object_new_object();
    size_t open = dw__stream_count(srv);

    json_object_object_add(obj, "open", u64(open));
    json_object_object_add(obj, "opened", u64(srv->streams.opened));
    json_object_object_add(obj, "frames", u64(srv->streams.frames));
    json_object_object_add(obj, "answered", u64(srv->streams.answered));
    json_object_object_add(obj, "refused", u64(srv->streams.refused));
    return obj;
}

static struct json_object *bus_doc(struct dw_server *srv)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *cu = json_object_new_object();
    struct json_object *ops = json_object_new_object();
    struct dw_bus_counts c;

    dw_bus_counts(srv->bus, &c);
    json_object_object_add(obj, "enabled", json_object_new_boolean(srv->bus != NULL));
    json_object_object_add(obj, "connected", json_object_new_boolean(c.connected != 0));
    json_object_object_add(obj, "published", u64(c.published));
    json_object_object_add(obj, "received", u64(c.received));
    json_object_object_add(obj, "dropped", u64(c.dropped));
    json_object_object_add(obj, "reconnects", u64(c.reconnects));
    json_object_object_add(obj, "drops_announced", u64(c.drops_announced));
    json_object_object_add(cu, "asked", u64(c.catch_ups_asked));
    json_object_object_add(cu, "rounds", u64(srv->io.catch_up_rounds));
    json_object_object_add(cu, "connections", u64(srv->io.caught_up));
    json_object_object_add(cu, "messages", u64(srv->io.caught_up_msgs));
    json_object_object_add(cu, "failed", u64(srv->io.catch_ups_failed));
    json_object_object_add(obj, "catch_up", cu);
    json_object_object_add(ops, "sent", u64(c.ops_sent));
    json_object_object_add(ops, "received", u64(c.ops_received));
    json_object_object_add(ops, "dropped", u64(c.ops_dropped));
    json_object_object_add(obj, "operator_actions", ops);
    return obj;
}

void dw__stats_figures(struct dw_server *srv, struct dw_bus_figures *out)
{
    out->connections = dw_hub_connection_count(srv->hub);
    out->users = dw_hub_user_count(srv->hub);
    out->messages_sent = dw__metrics_total(srv->metrics.sent_by_type);
    out->started_at = srv->started_at;
}

/* One node's entry in the cluster document; adds its figures to the totals unless stale. */
static struct json_object *node_doc(const struct dw_bus_peer *p, bool self, int64_t now,
                                    struct dw_bus_figures *total, unsigned *counted)
{
    struct json_object *obj = json_object_new_object();
    bool stale = now - p->heard_at > DW_BUS_PEER_STALE_NS;
    int64_t heard_ms = (now - p->heard_at) / DW_NSEC_PER_MSEC; /* to the millisecond */
    const char *slash = strrchr(p->id, '/'); /* its name is what comes before the instance */
    size_t name_len = slash ? (size_t)(slash - p->id) : strlen(p->id);

    json_object_object_add(obj, "node", json_object_new_string_len(p->id, (int)name_len));
    json_object_object_add(obj, "self", json_object_new_boolean(self));
    json_object_object_add(obj, "active_connections", u64(p->figures.connections));
    json_object_object_add(obj, "total_users", u64(p->figures.users));
    json_object_object_add(obj, "messages_sent", u64(p->figures.messages_sent));
    json_object_object_add(obj, "started_at", time_string(p->figures.started_at));
    json_object_object_add(obj, "last_heard", time_string(p->heard_at));
    json_object_object_add(obj, "seconds_since_heard", seconds(heard_ms * 1000000));
    json_object_object_add(obj, "stale", json_object_new_boolean(stale));
    if (!stale) {
        total->connections += p->figures.connections;
        total->users += p->figures.users;
        total->messages_sent += p->figures.messages_sent;
        ++*counted;
    }
    return obj;
}

/* This node and the others it heard from over the bus (their figures as they last announced
 * them), and the totals over the nodes heard from recently. */
static struct json_object *cluster_doc(struct dw_server *srv)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *list = json_object_new_array();
    struct dw_bus_peer peers[DW_BUS_PEERS_MAX + 1];
    struct dw_bus_figures total = {0};
    unsigned counted = 0;
    int64_t now = dw_now_realtime_ns();
    size_t n;

    snprintf(peers[0].id, sizeof(peers[0].id), "%s", srv->node);
    dw__stats_figures(srv, &peers[0].figures);
    peers[0].heard_at = now;
    n = 1 + dw_bus_peers(srv->bus, peers + 1, DW_BUS_PEERS_MAX);
    for (size_t i = 0; i < n; i++)
        json_object_array_add(list, node_doc(&peers[i], i == 0, now, &total, &counted));
    json_object_object_add(obj, "node", json_object_new_string(srv->node));
    json_object_object_add(obj, "nodes", list);
    json_object_object_add(obj, "nodes_counted", json_object_new_int((int)counted));
    json_object_object_add(obj, "active_connections", u64(total.connections));
    json_object_object_add(obj, "total_users", u64(total.users));
    json_object_object_add(obj, "messages_sent", u64(total.messages_sent));
    return obj;
}

/* The durable inbox's counters (inbox.h) and its retention's (retention.h); "enabled": false
 * without a database. */

static struct json_object *inbox_doc(struct dw_server *srv)
{
    struct json_object *obj = json_object_new_object();
    struct dw_inbox_counts c;
    struct dw_retention_counts rc;

    dw_inbox_counts(srv->inbox, &c);
    dw_retention_counts(srv->retention, &rc);
    json_object_object_add(obj, "enabled", json_object_new_boolean(srv->inbox != NULL));
    json_object_object_add(obj, "written", u64(c.written));
    json_object_object_add(obj, "failed", u64(c.failed));
    json_object_object_add(obj, "writes", u64(c.writes));
    json_object_object_add(obj, "acks", u64(c.acks));
    json_object_object_add(obj, "acks_failed", u64(c.acks_failed));
    json_object_object_add(obj, "replays", u64(c.replays));
    json_object_object_add(obj, "replayed", u64(c.replayed));
    json_object_object_add(obj, "replays_failed", u64(c.replays_failed));
    json_object_object_add(obj, "not_recovered", u64(c.not_recovered));
    json_object_object_add(obj, "duplicates", u64(c.duplicates));

    json_object_object_add(obj, "retention_seconds",
                           json_object_new_int64(srv->cfg->inbox_retention));
    json_object_object_add(obj, "depth", measured(rc.depth));
    json_object_object_add(obj, "dead_letters", measured(rc.dead_letters));
    json_object_object_add(obj, "moved_to_dead_letters", u64(rc.moved_to_dead_letters));
    json_object_object_add(obj, "acked_deleted", u64(rc.acked_deleted));
    json_object_object_add(obj, "ids_expired", u64(rc.ids_expired));
    json_object_object_add(obj, "sweeps", u64(rc.sweeps));
    json_object_object_add(obj, "last_sweep",
                           rc.last_sweep_ns ? time_string(rc.last_sweep_ns) : NULL);
    return obj;
}

struct json_object *dw__stats_service(struct dw_server *srv)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *ms = json_object_new_object();
    struct json_object *uptime = json_object_new_object();
    struct dw_hub_published pub;
    struct uptime_walk up;
    int64_t now = dw_now_realtime_ns();

    dw_hub_get_published(srv->hub, &pub);
    json_object_object_add(obj, "active_connections", u64(dw_hub_connection_count(srv->hub)));
    json_object_object_add(obj, "total_users", u64(dw_hub_user_count(srv->hub)));
    json_object_object_add(obj, "total_rooms", u64(dw_hub_channel_count(srv->hub)));

    json_object_object_add(ms, "total_sent", u64(dw__metrics_total(srv->metrics.sent_by_type)));
    json_object_object_add(ms, "total_failed", u64(srv->io.failed));
    json_object_object_add(ms, "total_dropped",
                           u64(dw__metrics_total(srv->metrics.dropped_by_type)));
    json_object_object_add(ms, "slow_consumer_closes", u64(srv->io.slow_closes));
    json_object_object_add(ms, "total_broadcast", u64(pub.broadcasts));
    json_object_object_add(ms, "deal_alerts", u64(pub.by_type[DW_MSG_DEAL_ALERT]));
    json_object_object_add(ms, "price_alerts", u64(pub.by_type[DW_MSG_PRICE_ALERT]));
    json_object_object_add(ms, "trip_updates", u64(pub.by_type[DW_MSG_TRIP_UPDATE]));
    json_object_object_add(ms, "notifications", u64(pub.by_type[DW_MSG_NOTIFICATION]));
    json_object_object_add(obj, "message_stats", ms);

    /* One entry per user, the first UPTIME_USERS_MAX users the map yields: the walk is over
     * users, not connections, so it costs the same whatever each user holds. */
    up.doc = uptime;
    up.now = now;
    up.listed = 0;
    up.truncated = false;
    dw__hub_for_each_user(srv->hub, add_uptime, &up);
    json_object_object_add(obj, "uptime_by_user", uptime);
    json_object_object_add(obj, "uptime_by_user_truncated", json_object_new_boolean(up.truncated));
    json_object_object_add(obj, "connections_opened", u64(srv->io.opened));
    json_object_object_add(obj, "connections_closed", u64(srv->io.closed));
    json_object_object_add(obj, "queue_size", json_object_new_int(srv->cfg->queue_size));
    json_object_object_add(obj, "uptime_seconds", seconds(now - srv->started_at));
    json_object_object_add(obj, "security", security_doc(srv));
    json_object_object_add(obj, "inbox", inbox_doc(srv));
    json_object_object_add(obj, "bus", bus_doc(srv));
    json_object_object_add(obj, "publish_sockets", publish_sockets_doc(srv));
    json_object_object_add(obj, "cluster", cluster_doc(srv));
    return obj;
}

/* The bytes queued for conn: what was pushed so far is moved to the pending queue first (the
 * I/O thread is the outbox's consumer; the next drain or WRITEABLE writes it as usual), then
 * counted. At most --queue-size messages and one batch, so the walk is bounded. */
static size_t pending_bytes(struct dw_conn *conn)
{
    dw_outbox_splice(&conn->outbox);
    return dw_outbox_pending_bytes(&conn->outbox);
}

/* The client address of conn (conn.c says where it comes from). */
static struct json_object *address(const struct dw_conn *conn)
{
    char text[DW_IP_TEXT_MAX];

    dw__sock_address(conn->io.wsi, text);
    return json_object_new_string(text);
}

/* One connection's entry; its channel names come out of *budget (names the document may
 * still list). */
static struct json_object *conn_doc(struct dw_conn *conn, unsigned *budget)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *subs = json_object_new_array();
    unsigned listed = 0;
    char id[24];

    snprintf(id, sizeof(id), "%llu", (unsigned long long)conn->id);
    json_object_object_add(obj, "connection_id", json_object_new_string(id));
    json_object_object_add(obj, "user_id", json_object_new_string(conn->user->id));
    json_object_object_add(obj, "address", address(conn));
    json_object_object_add(obj, "connected_at", time_string(conn->io.connected_at));
    json_object_object_add(obj, "last_activity", time_string(conn->io.last_activity_rt));
    json_object_object_add(obj, "last_heartbeat", time_string(conn->io.last_heartbeat_rt));
    json_object_object_add(obj, "messages_sent", u64(conn->io.messages_sent));
    json_object_object_add(obj, "messages_failed", u64(conn->io.messages_failed));
    json_object_object_add(obj, "messages_dropped", u64(conn->io.messages_dropped));
    json_object_object_add(obj, "queue_size", u64(dw_outbox_queued(&conn->outbox)));
    json_object_object_add(obj, "queue_bytes", u64(pending_bytes(conn)));
    for (struct dw_membership *m = conn->io.subs; m && listed<CONN_SUBS_LISTED_MAX && * budget> 0;
         m = m->next) {
        json_object_array_add(subs, json_object_new_string(m->chan->name));
        listed++;
        --*budget;
    }
    json_object_object_add(obj, "subscriptions", subs);
    json_object_object_add(obj, "subscription_count", json_object_new_int((int)conn->io.nsubs));
    json_object_object_add(obj, "subscriptions_truncated",
                           json_object_new_boolean(listed < conn->io.nsubs));
    return obj;
}

struct json_object *dw__stats_connections(struct dw_server *srv, unsigned limit)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *list = json_object_new_array();
    struct dw_conn *conn;
    unsigned listed = 0, budget = DOC_SUBS_LISTED_MAX;
    bool truncated = false;

    dw_rlist_for_each_entry(conn, dw__hub_all(srv->hub), struct dw_conn, all_link) {
        if (listed == limit) {
            truncated = true;
            break;
        }
        json_object_array_add(list, conn_doc(conn, &budget));
        listed++;
    }
    json_object_object_add(obj, "active_connections", u64(dw_hub_connection_count(srv->hub)));
    json_object_object_add(obj, "total_users", u64(dw_hub_user_count(srv->hub)));
    json_object_object_add(obj, "connections", list);
    json_object_object_add(obj, "truncated", json_object_new_boolean(truncated));
    json_object_object_add(obj, "cluster", cluster_doc(srv));
    return obj;
}

/* The operator's part of the per-user document: when the user's ban ends, or null. */
static void add_ban(struct dw_server *srv, struct json_object *obj, const char *user_id)
{
    int64_t until = dw__operator_banned_until(srv, user_id);

    json_object_object_add(obj, "banned_until", until ? time_string(until) : NULL);
}

/* The per-user document of a user without connections here whom the operator banned. */
static struct json_object *banned_user_doc(struct dw_server *srv, const char *user_id)
{
    struct json_object *obj = json_object_new_object();

    json_object_object_add(obj, "user_id", json_object_new_string(user_id));
    json_object_object_add(obj, "connections", json_object_new_int(0));
    json_object_object_add(obj, "connection_ids", json_object_new_array());
    json_object_object_add(obj, "connection_list", json_object_new_array());
    add_ban(srv, obj, user_id);
    return obj;
}

/* One entry of the operator's list of a user's connections. */
static struct json_object *conn_entry(const struct dw_conn *conn, const char *id)
{
    struct json_object *obj = json_object_new_object();

    json_object_object_add(obj, "connection_id", json_object_new_string(id));
    json_object_object_add(obj, "address", address(conn));
    json_object_object_add(obj, "connected_at", time_string(conn->io.connected_at));
    return obj;
}

struct json_object *dw__stats_user(struct dw_server *srv, const char *user_id, bool for_operator)
{
    struct json_object *obj, *subs, *conns, *list = NULL;
    struct dw_user *u;
    struct dw_conn *conn;
    int64_t connected_at = INT64_MAX, last_activity = 0, last_heartbeat = 0;
    uint64_t sent = 0, failed = 0, dropped = 0, queued = 0, queued_bytes = 0;
    uint64_t walk = ++srv->stats_walk;
    unsigned n = 0, distinct = 0;

    dw_rcu_read_lock();
    u = dw__hub_find_user(srv->hub, user_id);
    if (!u) {
        dw_rcu_read_unlock();
        if (for_operator && dw__operator_banned_until(srv, user_id))
            return banned_user_doc(srv, user_id);
        return NULL;
    }
    subs = json_object_new_array();
    conns = json_object_new_array();
    if (for_operator)
        list = json_object_new_array();
    dw_rlist_for_each_entry(conn, &u->conns, struct dw_conn, user_link) {
        char id[24];

        n++;
        if (conn->io.connected_at < connected_at)
            connected_at = conn->io.connected_at;
        if (conn->io.last_activity_rt > last_activity)
            last_activity = conn->io.last_activity_rt;
        if (conn->io.last_heartbeat_rt > last_heartbeat)
            last_heartbeat = conn->io.last_heartbeat_rt;
        sent += conn->io.messages_sent;
        failed += conn->io.messages_failed;
        dropped += conn->io.messages_dropped;
        queued += dw_outbox_queued(&conn->outbox);
        queued_bytes += pending_bytes(conn);
        snprintf(id, sizeof(id), "%llu", (unsigned long long)conn->id);
        json_object_array_add(conns, json_object_new_string(id));
        if (list)
            json_object_array_add(list, conn_entry(conn, id));
        for (struct dw_membership *m = conn->io.subs; m; m = m->next) {
            if (m->chan->seen == walk)
                continue; /* listed already, from another of the user's connections */
            m->chan->seen = walk;
            if (distinct++ < USER_SUBS_LISTED_MAX)
                json_object_array_add(subs, json_object_new_string(m->chan->name));
        }
    }
    obj = json_object_new_object();
    json_object_object_add(obj, "user_id", json_object_new_string(u->id));
    dw_rcu_read_unlock();

    json_object_object_add(obj, "connections", json_object_new_int((int)n));
    json_object_object_add(obj, "connection_ids", conns);
    if (list)
        json_object_object_add(obj, "connection_list", list);
    json_object_object_add(obj, "connected_at", time_string(connected_at));
    json_object_object_add(obj, "last_activity", time_string(last_activity));
    json_object_object_add(obj, "last_heartbeat", time_string(last_heartbeat));
    json_object_object_add(obj, "messages_sent", u64(sent));
    json_object_object_add(obj, "messages_failed", u64(failed));
    json_object_object_add(obj, "messages_dropped", u64(dropped));
    json_object_object_add(obj, "queue_size", u64(queued));
    json_object_object_add(obj, "queue_bytes", u64(queued_bytes));
    json_object_object_add(obj, "subscriptions", subs);
    json_object_object_add(obj, "subscription_count", json_object_new_int((int)distinct));
    json_object_object_add(obj, "subscriptions_truncated",
                           json_object_new_boolean(distinct > USER_SUBS_LISTED_MAX));
    if (for_operator)
        add_ban(srv, obj, user_id);
    return obj;
}
