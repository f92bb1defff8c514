/*
 * db — DESIGN: everything the daemon shares about its database sits in one struct dw_db:
 * the connection string, the health every store reports to, and a pthread key that gives each
 * worker thread a store of its own (created on the thread's first dw_db_store() call, freed
 * by the key's destructor when the thread exits). That keeps "one connection per worker"
 * without the worker pool knowing about databases.
 *
 * The keeper is one more thread, with the worker role since it blocks on libpq. It never
 * touches the hub or lws. It sleeps on a condition variable (monotonic clock) between
 * attempts, so dw_db_stop() wakes it at once; only a statement in progress delays the stop.
 */
#define DW_LOG_MODULE "db"
#include "dealwire/db.h"
#include "dealwire/config.h"
#include "dealwire/demo.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/time.h"
#include "dealwire/migrate.h"
#include "dealwire/store.h"
#include "dealwire/thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dw_db {
    char *conninfo;
    bool load_demo;
    struct dw_store_health health;
    pthread_key_t store_key; /* each thread's struct dw_store */

    pthread_t keeper;
    bool started; /* main thread only */
    dw_db_fatal_fn *on_fatal;
    void *fatal_arg;
    _Atomic bool failed;

    pthread_mutex_t lock;
    pthread_cond_t wake; /* CLOCK_MONOTONIC */
    bool stopping;       /* under lock */
};

static void free_store(void *st)
{
    dw_store_free(st);
}

/* ------------------------------------------------------------------------------------------
 * The keeper
 * ------------------------------------------------------------------------------------------ */

/* Sleeps ns nanoseconds unless stopped first. Returns false when the keeper must stop. */
static bool pause_for(struct dw_db *db, int64_t ns)
{
    struct timespec deadline;
    bool go_on;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(ns / DW_NSEC_PER_SEC);
    deadline.tv_nsec += (long)(ns % DW_NSEC_PER_SEC);
    if (deadline.tv_nsec >= DW_NSEC_PER_SEC) {
        deadline.tv_sec++;
        deadline.tv_nsec -= DW_NSEC_PER_SEC;
    }
    pthread_mutex_lock(&db->lock);
    while (!db->stopping) {
        if (pthread_cond_timedwait(&db->wake, &db->lock, &deadline) == ETIMEDOUT)
            break;
    }
    go_on = !db->stopping;
    pthread_mutex_unlock(&db->lock);
    return go_on;
}

/* How long to wait before trying again: until the store's backoff allows a connection
 * attempt (plus a millisecond, so that the attempt is not refused as early), or a second
 * when it is connected and the failure was a transient server error. */
static int64_t retry_delay(const struct dw_store *st)
{
    int64_t left = dw_store_retry_in_ns(st);

    return left > 0 ? left + DW_NSEC_PER_MSEC : DW_STORE_BACKOFF_MIN_NS;
}

static void *keeper_main(void *arg)
{
    struct dw_db *db = arg;
    struct dw_store *st;
    int version = 0;
    int r;

    dw_thread_set_role(DW_THREAD_WORKER);
    st = dw_db_store(db);

    /* 1. The schema, however long the database takes to come up. */
    for (;;) {
        r = dw_migrate_apply(st, &version);
        if (r >= 0)
            break;
        if (r != -EAGAIN)
            goto fatal;
        if (!pause_for(db, retry_delay(st)))
            return NULL;
    }
    dw_store_health_set_schema(&db->health, version);

    /* 2. The demo data, when asked for. */
    while (db->load_demo) {
        r = dw_demo_load(st, NULL);
        if (r == 0)
            break;
        if (r != -EAGAIN)
            goto fatal;
        if (!pause_for(db, retry_delay(st)))
            return NULL;
    }

    /* 3. Probes, so that the health follows the server when nothing else queries it. The
     * store logs the changes (one line down, one line back). */
    int64_t next = (int64_t)DW_DB_PROBE_INTERVAL_S * DW_NSEC_PER_SEC;
    while (pause_for(db, next)) {
        r = dw_store_run(st, "SELECT 1", 0, NULL);
        next = r == 0 ? (int64_t)DW_DB_PROBE_INTERVAL_S * DW_NSEC_PER_SEC : retry_delay(st);
    }
    return NULL;

fatal:
    atomic_store(&db->failed, true);
    dw_log(DW_LOG_ERROR, "cannot bring the database up to date; stopping");
    db->on_fatal(db->fatal_arg);
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------------------------ */

struct dw_db *dw_db_new(const struct dw_config *cfg)
{
    pthread_condattr_t attr;
    struct dw_db *db;
    char why[256];
    int err;

    if (!cfg || !cfg->db)
        return NULL;
    if (dw_store_check_conninfo(cfg->db, why, sizeof(why)) < 0) {
        /* The value itself is not repeated: it may hold a password. */
        fprintf(stderr, "dealwire: invalid value for --db: %s\n", why);
        return NULL;
    }

    db = dw_xcalloc(1, sizeof(*db));
    db->conninfo = dw_xstrdup(cfg->db);
    db->load_demo = cfg->load_demo_data;
    dw_store_health_init(&db->health);
    atomic_init(&db->failed, false);
    err = pthread_key_create(&db->store_key, free_store);
    if (err)
        dw_panic("pthread_key_create: %s", strerror(err));
    pthread_mutex_init(&db->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&db->wake, &attr);
    pthread_condattr_destroy(&attr);
    return db;
}

int dw_db_start(struct dw_db *db, dw_db_fatal_fn *on_fatal, void *arg)
{
    int err;

    if (!db || !on_fatal || db->started)
        return -EINVAL;
    db->on_fatal = on_fatal;
    db->fatal_arg = arg;
    err = pthread_create(&db->keeper, NULL, keeper_main, db);
    if (err) {
        dw_log(DW_LOG_ERROR, "cannot start the database keeper thread: %s", strerror(err));
        return -err;
    }
    db->started = true;
    return 0;
}

void dw_db_stop(struct dw_db *db)
{
    if (!db || !db->started)
        return;
    pthread_mutex_lock(&db->lock);
    db->stopping = true;
    pthread_cond_broadcast(&db->wake);
    pthread_mutex_unlock(&db->lock);
    pthread_join(db->keeper, NULL);
    db->started = false;
}

void dw_db_free(struct dw_db *db)
{
    if (!db)
        return;
    dw_db_stop(db);
    pthread_key_delete(db->store_key);
    pthread_mutex_destroy(&db->lock);
    pthread_cond_destroy(&db->wake);
    /* The connection string may hold a password. */
    memset(db->conninfo, 0, strlen(db->conninfo));
    free(db->conninfo);
    free(db);
}

struct dw_store *dw_db_store(struct dw_db *db)
{
    struct dw_store *st;
    int err;

    DW_ASSERT_THREAD(DW_THREAD_WORKER);
    st = pthread_getspecific(db->store_key);
    if (st)
        return st;
    st = dw_store_new(db->conninfo, &db->health);
    err = pthread_setspecific(db->store_key, st);
    if (err)
        dw_panic("pthread_setspecific: %s", strerror(err));
    return st;
}

struct dw_store_health *dw_db_health(struct dw_db *db)
{
    return &db->health;
}

bool dw_db_failed(const struct dw_db *db)
{
    return db && atomic_load(&db->failed);
}
