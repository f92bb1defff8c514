/*
 * hub — DESIGN: the maps of who is connected, and fan-out through them.
 *
 * Writers: only the I/O thread adds and removes connections, users, channels and memberships,
 * so the maps need no writer lock. Readers: any registered thread, under rcu_read_lock().
 * Deleted objects are freed after a grace period (call_rcu), so a reader holding a pointer
 * can always finish what it is doing; a connection found this way may already be closed, and
 * a push to it is dropped by whoever frees it.
 *
 * Fan-out is one loop over a list: per recipient, one queue node taken from a block of up to
 * 256 (no allocation, the message references taken a block at a time), one wait-free enqueue
 * and, when the connection was idle, one ready-queue push. The wake-up (lws_cancel_service,
 * through the I/O thread's struct dw_wake) happens once per call, or once per batch of the
 * sending thread (wake.h).
 */
#define DW_LOG_MODULE "hub"
#include "hub_int.h"
#include "dealwire/bus.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/thread.h"
#include "dealwire/wake.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct dw_hub {
    struct cds_lfht *conns;    /* id -> dw_conn */
    struct cds_lfht *users;    /* user id -> dw_user */
    struct cds_lfht *channels; /* name -> dw_channel */
    struct dw_rlist all;       /* every dw_conn, for broadcasts */
    struct dw_readyq ready;
    const struct dw_wake *wake; /* the I/O thread's, borrowed */
    uint64_t next_id;           /* io only */
    _Atomic size_t nconns, nusers, nchannels;
    _Atomic uint64_t published[DW_MSG__COUNT];
    _Atomic uint64_t broadcasts;
    _Atomic bool sealed; /* shutting down: sends reach no one (dw__hub_seal) */
    struct dw_bus *bus;  /* --redis: sends go to the other nodes too; set before any send */
};

/* FNV-1a, then a final mix so that close strings spread over the buckets. */
static unsigned long hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    h ^= h >> 29;
    return (unsigned long)h;
}

static unsigned long hash_id(uint64_t x)
{
    /* splitmix64 finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (unsigned long)x;
}

static int match_user(struct cds_lfht_node *node, const void *key)
{
    struct dw_user *u = caa_container_of(node, struct dw_user, node);

    DW_TSAN_ACQUIRE(u);
    return strcmp(u->id, key) == 0;
}

static int match_channel(struct cds_lfht_node *node, const void *key)
{
    struct dw_channel *ch = caa_container_of(node, struct dw_channel, node);

    DW_TSAN_ACQUIRE(ch);
    return strcmp(ch->name, key) == 0;
}

static int match_conn(struct cds_lfht_node *node, const void *key)
{
    struct dw_conn *c = caa_container_of(node, struct dw_conn, id_node);

    DW_TSAN_ACQUIRE(c);
    return c->id == *(const uint64_t *)key;
}

static struct cds_lfht *new_table(void)
{
    struct cds_lfht *ht = cds_lfht_new_flavor(
        1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, &urcu_memb_flavor, NULL);

    if (!ht)
        dw_panic("cds_lfht_new failed");
    return ht;
}

struct dw_hub *dw_hub_new(const struct dw_wake *wake)
{
    struct dw_hub *hub = dw_xcalloc(1, sizeof(*hub));

    hub->conns = new_table();
    hub->users = new_table();
    hub->channels = new_table();
    dw_rlist_init(&hub->all);
    dw_readyq_init(&hub->ready);
    hub->wake = wake;
    hub->next_id = 1;
    return hub;
}

void dw_hub_free(struct dw_hub *hub)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;

    if (!hub)
        return;
    /* Connections still on the ready queue hold a reference each. */
    dw_readyq_take_all(&hub->ready, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL)
        dw__conn_unref(caa_container_of(node, struct dw_conn, ready_node));
    /* Every connection was removed before; wait for their deferred frees. */
    dw_rcu_barrier();
    if (cds_lfht_destroy(hub->conns, NULL) || cds_lfht_destroy(hub->users, NULL) ||
        cds_lfht_destroy(hub->channels, NULL))
        dw_log(DW_LOG_WARN, "a map was not empty at shutdown");
    free(hub);
}

/* ==========================================================================================
 * Fan-out (any thread)
 */

/* One fan-out of one message: its queue nodes come in blocks, and the message references
 * they hold are taken a block at a time, so a recipient costs no allocation and no atomic
 * operation on the shared message. */
struct fanout {
    struct dw_hub *hub;
    struct dw_msg *msg;
    struct dw_outbox_block *blk; /* the current block */
    unsigned next_cap;           /* size of the next block */
    size_t count;                /* recipients reached */
    bool wake;
};

/* Largest block: what a slow consumer keeps alive per message it holds (24 bytes a node). */
#define FANOUT_BLOCK_MAX 256u

static void fanout_init(struct fanout *f, struct dw_hub *hub, struct dw_msg *msg, unsigned first)
{
    f->hub = hub;
    f->msg = msg;
    f->blk = NULL;
    f->next_cap = first;
    f->count = 0;
    f->wake = false;
}

/* Finishes the current block: its unused nodes go back with it. */
static void fanout_close_block(struct fanout *f)
{
    if (!f->blk)
        return;
    dw_outbox_block_finish(f->blk);
    f->blk = NULL;
}

/* rcu: reader. Queues the message on c unless c is closing or closed (conn.c sets closed as
 * soon as the connection leaves OPEN). */
static inline void fanout_to(struct fanout *f, struct dw_conn *c)
{
    struct dw_outbox_node *node;

    if (atomic_load_explicit(&c->closed, memory_order_relaxed))
        return;
    node = f->blk ? dw_outbox_block_node(f->blk) : NULL;
    if (!node) {
        fanout_close_block(f);
        /* The block's reference comes before any node is visible, so no consumer can free
         * the message early. */
        f->blk = dw_outbox_block_new(f->next_cap, f->msg);
        if (f->next_cap < FANOUT_BLOCK_MAX)
            f->next_cap *= 2;
        node = dw_outbox_block_node(f->blk);
    }
    f->count++;
    if (dw_outbox_push_node(&c->outbox, node)) {
        /* The ready queue's own reference: c stays allocated until the I/O thread is done. */
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        if (dw_readyq_push(&f->hub->ready, &c->ready_node))
            f->wake = true;
    }
}

/* Closes the last block and wakes the I/O thread (at the end of the sender's batch when it
 * is in one: wake.h). Returns the number of recipients. */
static size_t fanout_finish(struct fanout *f)
{
    fanout_close_block(f);
    if (f->wake)
        dw_wake(f->hub->wake);
    return f->count;
}

/* The sends read it inside their read-side section, so that dw__hub_seal's grace period
 * separates the sends it lets through (queued before it returns) from those it stops. */
bool dw_hub_sealed(struct dw_hub *hub)
{
    return atomic_load_explicit(&hub->sealed, memory_order_relaxed);
}

void dw__hub_seal(struct dw_hub *hub)
{
    DW_ASSERT_THREAD(DW_THREAD_IO);
    atomic_store_explicit(&hub->sealed, true, memory_order_relaxed);
    dw_rcu_synchronize();
}

static struct dw_user *find_user(struct dw_hub *hub, const char *id);
static struct dw_channel *find_channel(struct dw_hub *hub, const char *name);

size_t dw__hub_deliver_user(struct dw_hub *hub, const char *user_id, struct dw_msg *msg)
{
    struct fanout f;
    struct dw_user *u;
    struct dw_conn *c;

    fanout_init(&f, hub, msg, 2);
    dw_rcu_read_lock();
    u = dw_hub_sealed(hub) ? NULL : find_user(hub, user_id);
    if (u) {
        dw_rlist_for_each_entry(c, &u->conns, struct dw_conn, user_link) {
            fanout_to(&f, c);
        }
    }
    dw_rcu_read_unlock();
    return fanout_finish(&f);
}

size_t dw__hub_deliver_channel(struct dw_hub *hub, const char *channel, struct dw_msg *msg)
{
    struct fanout f;
    struct dw_channel *ch;
    struct dw_membership *m;

    fanout_init(&f, hub, msg, 64);
    dw_rcu_read_lock();
    ch = dw_hub_sealed(hub) ? NULL : find_channel(hub, channel);
    if (ch) {
        dw_rlist_for_each_entry(m, &ch->members, struct dw_membership, chan_link) {
            fanout_to(&f, m->conn);
        }
    }
    dw_rcu_read_unlock();
    return fanout_finish(&f);
}

size_t dw__hub_deliver_all(struct dw_hub *hub, struct dw_msg *msg)
{
    struct fanout f;
    struct dw_conn *c;

    fanout_init(&f, hub, msg, FANOUT_BLOCK_MAX);
    dw_rcu_read_lock();
    if (!dw_hub_sealed(hub)) {
        dw_rlist_for_each_entry(c, &hub->all, struct dw_conn, all_link) {
            fanout_to(&f, c);
        }
    }
    dw_rcu_read_unlock();
    return fanout_finish(&f);
}

/* The connections of this node a send to user_id (or channel) would reach now: what a send
 * through Redis answers (it is delivered here later, by the bus). */
static size_t count_user(struct dw_hub *hub, const char *user_id)
{
    struct dw_user *u;
    size_t n;

    dw_rcu_read_lock();
    u = find_user(hub, user_id);
    n = u ? atomic_load_explicit(&u->nconns, memory_order_relaxed) : 0;
    dw_rcu_read_unlock();
    return n;
}

static size_t count_channel(struct dw_hub *hub, const char *channel)
{
    struct dw_channel *ch;
    size_t n;

    dw_rcu_read_lock();
    ch = find_channel(hub, channel);
    n = ch ? atomic_load_explicit(&ch->nmembers, memory_order_relaxed) : 0;
    dw_rcu_read_unlock();
    return n;
}

/* The sends. Without a bus, to this node's connections. With one that is up, through Redis
 * only: this node's connections get it when it comes back on the node's subscription, in the
 * order Redis gives every node (bus.h, "Order"). With a bus that is down, here at once and to
 * Redis as it can (dropped and counted while it is away). */
size_t dw_hub_send_user(struct dw_hub *hub, const char *user_id, struct dw_msg *msg)
{
    if (!hub->bus || dw_hub_sealed(hub))
        return dw__hub_deliver_user(hub, user_id, msg);
    if (dw_bus_publish(hub->bus, DW_BUS_USER, user_id, msg))
        return count_user(hub, user_id);
    return dw__hub_deliver_user(hub, user_id, msg);
}

size_t dw_hub_send_channel(struct dw_hub *hub, const char *channel, struct dw_msg *msg)
{
    if (!hub->bus || dw_hub_sealed(hub))
        return dw__hub_deliver_channel(hub, channel, msg);
    if (dw_bus_publish(hub->bus, DW_BUS_CHANNEL_TARGET, channel, msg))
        return count_channel(hub, channel);
    return dw__hub_deliver_channel(hub, channel, msg);
}

size_t dw_hub_send_all(struct dw_hub *hub, struct dw_msg *msg)
{
    if (!hub->bus || dw_hub_sealed(hub))
        return dw__hub_deliver_all(hub, msg);
    if (dw_bus_publish(hub->bus, DW_BUS_ALL, NULL, msg))
        return dw_hub_connection_count(hub);
    return dw__hub_deliver_all(hub, msg);
}

void dw_hub_set_bus(struct dw_hub *hub, struct dw_bus *bus)
{
    hub->bus = bus;
}

void dw_hub_count_published(struct dw_hub *hub, int type, int broadcast)
{
    if (type >= 0 && type < DW_MSG__COUNT)
        atomic_fetch_add_explicit(&hub->published[type], 1, memory_order_relaxed);
    if (broadcast)
        atomic_fetch_add_explicit(&hub->broadcasts, 1, memory_order_relaxed);
}

void dw_hub_get_published(struct dw_hub *hub, struct dw_hub_published *out)
{
    out->broadcasts = atomic_load_explicit(&hub->broadcasts, memory_order_relaxed);
    for (int i = 0; i < DW_MSG__COUNT; i++)
        out->by_type[i] = atomic_load_explicit(&hub->published[i], memory_order_relaxed);
}

size_t dw_hub_connection_count(struct dw_hub *hub)
{
    return atomic_load_explicit(&hub->nconns, memory_order_relaxed);
}

size_t dw_hub_user_count(struct dw_hub *hub)
{
    return atomic_load_explicit(&hub->nusers, memory_order_relaxed);
}

size_t dw_hub_channel_count(struct dw_hub *hub)
{
    return atomic_load_explicit(&hub->nchannels, memory_order_relaxed);
}

/* ==========================================================================================
 * Connections (I/O thread)
 */

struct dw_conn *dw__hub_conn_new(struct dw_hub *hub)
{
    struct dw_conn *c = dw_xcalloc(1, sizeof(*c));

    dw_outbox_init(&c->outbox);
    cds_wfcq_node_init(&c->ready_node);
    atomic_init(&c->refs, 1);
    atomic_init(&c->closed, 0);
    c->id = hub->next_id++;
    cds_lfht_node_init(&c->id_node);
    return c;
}

/* rcu: reader. The node of key in ht, or NULL. */
static struct cds_lfht_node *lookup(struct cds_lfht *ht, unsigned long hash,
                                    cds_lfht_match_fct match, const void *key)
{
    struct cds_lfht_iter iter;

    cds_lfht_lookup(ht, hash, match, key, &iter);
    return cds_lfht_iter_get_node(&iter);
}

/* rcu: reader. The user named id, or NULL; what TSan must know is acquired in match_user. */
static struct dw_user *find_user(struct dw_hub *hub, const char *id)
{
    struct cds_lfht_node *node = lookup(hub->users, hash_str(id), match_user, id);

    return node ? caa_container_of(node, struct dw_user, node) : NULL;
}

/* rcu: reader. The channel named name, or NULL. */
static struct dw_channel *find_channel(struct dw_hub *hub, const char *name)
{
    struct cds_lfht_node *node = lookup(hub->channels, hash_str(name), match_channel, name);

    return node ? caa_container_of(node, struct dw_channel, node) : NULL;
}

struct dw_user *dw__hub_find_user(struct dw_hub *hub, const char *id)
{
    return find_user(hub, id);
}

void dw__hub_add(struct dw_hub *hub, struct dw_conn *conn, const char *user_id)
{
    struct dw_user *u;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    dw_rcu_read_lock();
    u = find_user(hub, user_id);
    if (!u) {
        size_t len = strlen(user_id);

        u = dw_xcalloc(1, sizeof(*u) + len + 1);
        memcpy(u->id, user_id, len + 1);
        dw_rlist_init(&u->conns);
        cds_lfht_node_init(&u->node);
        DW_TSAN_RELEASE(u);
        cds_lfht_add(hub->users, hash_str(u->id), &u->node);
        atomic_fetch_add_explicit(&hub->nusers, 1, memory_order_relaxed);
    }
    conn->user = u;
    atomic_fetch_add_explicit(&u->nconns, 1, memory_order_relaxed);
    dw_rlist_add_tail(&u->conns, &conn->user_link);
    dw_rlist_add_tail(&hub->all, &conn->all_link);
    DW_TSAN_RELEASE(conn);
    cds_lfht_add(hub->conns, hash_id(conn->id), &conn->id_node);
    dw_rcu_read_unlock();
    atomic_fetch_add_explicit(&hub->nconns, 1, memory_order_relaxed);
}

static void free_user_rcu(struct rcu_head *head)
{
    DW_RCU_CALLBACK_ENTER();
    free(caa_container_of(head, struct dw_user, rcu));
}

static void free_channel_rcu(struct rcu_head *head)
{
    DW_RCU_CALLBACK_ENTER();
    free(caa_container_of(head, struct dw_channel, rcu));
}

static void free_membership_rcu(struct rcu_head *head)
{
    DW_RCU_CALLBACK_ENTER();
    free(caa_container_of(head, struct dw_membership, rcu));
}

static void unref_conn_rcu(struct rcu_head *head)
{
    DW_RCU_CALLBACK_ENTER();
    dw__conn_unref(caa_container_of(head, struct dw_conn, rcu));
}

/* io. Unlinks membership m from its channel; frees the channel when it becomes empty. */
static void leave_channel(struct dw_hub *hub, struct dw_membership *m)
{
    struct dw_channel *ch = m->chan;

    dw_rlist_del(&m->chan_link);
    if (atomic_fetch_sub_explicit(&ch->nmembers, 1, memory_order_relaxed) == 1) {
        if (cds_lfht_del(hub->channels, &ch->node) == 0) {
            atomic_fetch_sub_explicit(&hub->nchannels, 1, memory_order_relaxed);
            dw_call_rcu(&ch->rcu, free_channel_rcu);
        }
    }
    dw_call_rcu(&m->rcu, free_membership_rcu);
}

void dw__hub_remove(struct dw_hub *hub, struct dw_conn *conn)
{
    struct dw_user *u = conn->user;
    struct dw_membership *m, *next;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    atomic_store_explicit(&conn->closed, 1, memory_order_relaxed);
    dw_rcu_read_lock();
    for (m = conn->io.subs; m; m = next) {
        next = m->next;
        leave_channel(hub, m);
    }
    conn->io.subs = NULL;
    conn->io.nsubs = 0;

    dw_rlist_del(&conn->user_link);
    dw_rlist_del(&conn->all_link);
    if (cds_lfht_del(hub->conns, &conn->id_node) == 0)
        atomic_fetch_sub_explicit(&hub->nconns, 1, memory_order_relaxed);
    if (atomic_fetch_sub_explicit(&u->nconns, 1, memory_order_relaxed) == 1) {
        if (cds_lfht_del(hub->users, &u->node) == 0) {
            atomic_fetch_sub_explicit(&hub->nusers, 1, memory_order_relaxed);
            dw_call_rcu(&u->rcu, free_user_rcu);
        }
    }
    dw_rcu_read_unlock();
    dw_call_rcu(&conn->rcu, unref_conn_rcu);
}

int dw__hub_subscribe(struct dw_hub *hub, struct dw_conn *conn, const char *channel,
                      unsigned max_subs)
{
    struct dw_channel *ch;
    struct dw_membership *m;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    for (m = conn->io.subs; m; m = m->next) {
        if (strcmp(m->chan->name, channel) == 0)
            return 1;
    }
    if (conn->io.nsubs >= max_subs)
        return -E2BIG;

    dw_rcu_read_lock();
    ch = find_channel(hub, channel);
    if (!ch) {
        size_t len = strlen(channel);

        ch = dw_xcalloc(1, sizeof(*ch) + len + 1);
        memcpy(ch->name, channel, len + 1);
        dw_rlist_init(&ch->members);
        cds_lfht_node_init(&ch->node);
        DW_TSAN_RELEASE(ch);
        cds_lfht_add(hub->channels, hash_str(ch->name), &ch->node);
        atomic_fetch_add_explicit(&hub->nchannels, 1, memory_order_relaxed);
    }
    m = dw_xcalloc(1, sizeof(*m));
    m->conn = conn;
    m->chan = ch;
    m->next = conn->io.subs;
    conn->io.subs = m;
    conn->io.nsubs++;
    atomic_fetch_add_explicit(&ch->nmembers, 1, memory_order_relaxed);
    dw_rlist_add_tail(&ch->members, &m->chan_link);
    dw_rcu_read_unlock();
    return 0;
}

int dw__hub_unsubscribe(struct dw_hub *hub, struct dw_conn *conn, const char *channel)
{
    struct dw_membership **pp, *m;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    for (pp = &conn->io.subs; (m = *pp) != NULL; pp = &m->next) {
        if (strcmp(m->chan->name, channel) == 0) {
            *pp = m->next;
            conn->io.nsubs--;
            dw_rcu_read_lock();
            leave_channel(hub, m);
            dw_rcu_read_unlock();
            return 0;
        }
    }
    return -ENOENT;
}

struct dw_conn *dw__hub_find_conn(struct dw_hub *hub, uint64_t id)
{
    struct cds_lfht_node *node = lookup(hub->conns, hash_id(id), match_conn, &id);

    return node ? caa_container_of(node, struct dw_conn, id_node) : NULL;
}

struct dw_rlist *dw__hub_all(struct dw_hub *hub)
{
    return &hub->all;
}

void dw__hub_for_each_user(struct dw_hub *hub, bool (*fn)(struct dw_user *user, void *arg),
                           void *arg)
{
    struct cds_lfht_iter iter;
    struct dw_user *u;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    dw_rcu_read_lock();
    cds_lfht_for_each_entry(hub->users, &iter, u, node) {
        if (!fn(u, arg))
            break;
    }
    dw_rcu_read_unlock();
}

void dw__hub_take_ready(struct dw_hub *hub, struct dw_readyq_batch *batch)
{
    dw_readyq_take_all(&hub->ready, batch);
}

void dw__hub_take_more(struct dw_hub *hub, struct dw_readyq_batch *batch)
{
    dw_readyq_take_more(&hub->ready, batch);
}
