/*
 * leader — DESIGN: a ticker (ticker.h) with a PostgreSQL session of its own holds, or tries to
 * take, one advisory lock. Holding it is leading; PostgreSQL releases it when the session ends,
 * so a node that dies hands the lead over by dying. Each tick is one statement that says
 * whether this session holds the lock (taking it when it is free), records the node in
 * dealwire_nodes, and counts the other nodes heard from lately. The flag the monitors read is an
 * atomic: it is set only from a tick's answer, and cleared as soon as a tick fails (a session
 * that cannot answer may be gone, and its lock with it).
 */
#define DW_LOG_MODULE "leader"
#include "dealwire/leader.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/store.h"
#include "dealwire/ticker.h"
#include "dealwire/time.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The advisory lock: (class, object), an arbitrary pair that dealwire owns in its database
 * ("dw" and 1). pg_locks shows it as classid, objid and objsubid 2 (the two-key form). */
#define LOCK_CLASS  "25719"
#define LOCK_OBJECT "1"

/* DW_LEADER_NODE_TTL_S as text, for the statement. */
#define NODE_TTL_TEXT "10"
_Static_assert(DW_LEADER_NODE_TTL_S == 10, "NODE_TTL_TEXT");

/* The leader's session ends after this long without a statement (idle_session_timeout, ms):
 * a leader cut off from the database without its connection closing (a network partition)
 * would otherwise keep the lock until the server noticed the dead connection. A tick every
 * DW_LEADER_TICK_S keeps a live session from ever getting there. */
#define IDLE_SESSION_TIMEOUT_MS "10000"

/* Warn again about peers without a shared bus at most this often. */
#define PEERS_WARN_NS (60 * DW_NSEC_PER_SEC)

/* $1 node, $2 the node's start (ISO), $3 whether it has a bus. Holds or takes the lock;
 * records the node; returns (leader, peers it shares no bus with). */
static const char tick_sql[] =
    "WITH held AS ("
    "  SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    "    AND classid = " LOCK_CLASS " AND objid = " LOCK_OBJECT " AND objsubid = 2"
    "    AND pid = pg_backend_pid() AND granted)"
    "   THEN true ELSE pg_try_advisory_lock(" LOCK_CLASS ", " LOCK_OBJECT ") END AS leader),"
    " me AS ("
    "  INSERT INTO dealwire_nodes AS n (node, started_at, last_seen, leader, redis)"
    "  SELECT $1, $2::timestamptz, now(), held.leader, $3::boolean FROM held"
    "  ON CONFLICT (node) DO UPDATE SET started_at = excluded.started_at,"
    "   last_seen = excluded.last_seen, leader = excluded.leader, redis = excluded.redis"
    "  RETURNING 1)"
    " SELECT held.leader, (SELECT count(*) FROM dealwire_nodes WHERE node <> $1"
    "  AND last_seen > now() - interval '" NODE_TTL_TEXT " seconds'"
    "  AND NOT (redis AND $3::boolean))"
    " FROM held, me,"
    "  (SELECT set_config('idle_session_timeout', '" IDLE_SESSION_TIMEOUT_MS "', false)) AS cfg";

struct dw_leader {
    char node[128];
    char started[DW_TIME_ISO_LEN]; /* this process's start */
    bool bus;
    struct dw_ticker *ticker;
    _Atomic bool leader;
    _Atomic unsigned peers;
    /* the ticker's thread only */
    int64_t peers_warned; /* monotonic ns of the last warning about peers, 0: none */
    bool failed;          /* the last tick failed (logged once per failure run) */
};

static void set_leader(struct dw_leader *l, bool leader)
{
    bool was = atomic_exchange_explicit(&l->leader, leader, memory_order_relaxed);

    if (leader && !was)
        dw_log(DW_LOG_INFO, "%s leads the monitors (advisory lock %s,%s)", l->node, LOCK_CLASS,
               LOCK_OBJECT);
    else if (!leader && was)
        dw_log(DW_LOG_WARN, "%s no longer leads the monitors", l->node);
}

static void warn_peers(struct dw_leader *l, unsigned peers)
{
    int64_t now = dw_now_mono_ns();

    if (peers == 0) {
        l->peers_warned = 0;
        return;
    }
    if (l->peers_warned && now - l->peers_warned < PEERS_WARN_NS)
        return;
    l->peers_warned = now;
    dw_log(DW_LOG_WARN,
           "%u other dealwire node%s share%s this database without a shared bus: one node runs "
           "the monitors, and the clients of the others do not get its live alerts (they get "
           "the stored ones when they resume); give every node the same --redis "
           "(docs/operations.md, \"Several nodes\")",
           peers, peers == 1 ? "" : "s", peers == 1 ? "s" : "");
}

static void tick(struct dw_store *st, void *arg)
{
    struct dw_leader *l = arg;
    const char *params[3] = {l->node, l->started, l->bus ? "true" : "false"};
    PGresult *res = NULL;
    long long peers = 0;
    int r = dw_store_exec(st, &res, tick_sql, 3, params);

    if (r == 0 && (PQntuples(res) != 1 || PQnfields(res) != 2 ||
                   dw_store_parse_int(PQgetvalue(res, 0, 1), 0, 1000000, &peers) < 0))
        r = -EPROTO;
    if (r < 0) {
        PQclear(res);
        set_leader(l, false);
        if (!l->failed && r != -EAGAIN)
            dw_log(DW_LOG_WARN, "cannot check the monitors' lock: %s",
                   r == -EPROTO ? "unexpected result" : dw_store_error(st));
        l->failed = true;
        return;
    }
    l->failed = false;
    set_leader(l, PQgetvalue(res, 0, 0)[0] == 't');
    atomic_store_explicit(&l->peers, (unsigned)peers, memory_order_relaxed);
    PQclear(res);
    warn_peers(l, (unsigned)peers);
}

/* At the stop: the node leaves the table (its session, and the lock, end with the thread). */
static void leave(struct dw_store *st, void *arg)
{
    struct dw_leader *l = arg;
    const char *params[1] = {l->node};

    dw_store_run(st, "DELETE FROM dealwire_nodes WHERE node = $1", 1, params);
}

void dw_leader_node_name(int port, char out[128])
{
    char host[64];

    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    snprintf(out, 128, "%s:%d", host, port);
}

struct dw_leader *dw_leader_start(struct dw_db *db, const char *node, bool bus)
{
    struct dw_leader *l = dw_xcalloc(1, sizeof(*l));

    l->bus = bus;
    snprintf(l->node, sizeof(l->node), "%s", node);
    dw_time_format_iso(l->started, dw_now_realtime_ns());
    atomic_init(&l->leader, false);
    atomic_init(&l->peers, 0);
    l->ticker =
        dw_ticker_start(db, "monitor leader", DW_LEADER_TICK_S * DW_NSEC_PER_SEC, tick, leave, l);
    if (!l->ticker) {
        free(l);
        return NULL;
    }
    return l;
}

bool dw_leader_is_leader(const struct dw_leader *l)
{
    return l && atomic_load_explicit(&l->leader, memory_order_relaxed);
}

unsigned dw_leader_peers(const struct dw_leader *l)
{
    return l ? atomic_load_explicit(&l->peers, memory_order_relaxed) : 0;
}

void dw_leader_stop(struct dw_leader *l)
{
    if (!l)
        return;
    dw_ticker_stop(l->ticker);
    free(l);
}
