/*
 * test_db — struct dw_db without a database server: each worker thread gets a store of its
 * own, created on first use and freed when the thread exits (the asan preset would report a
 * leak otherwise); stores on several threads failing at once make one outage; the keeper
 * thread starts against an unreachable server and stops at once, in the middle of its
 * backoff; and a --db that libpq cannot parse is refused.
 *
 * The keeper against a real PostgreSQL (migrations, demo data, outages) is tested in
 * tests/integration/test_db.py.
 */
#include "dealwire/config.h"
#include "dealwire/db.h"
#include "dealwire/log.h"
#include "dealwire/msg.h"
#include "dealwire/time.h"
#include "dealwire/store.h"
#include "dealwire/thread.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

#define NTHREADS 4

/* A loopback port that refuses connections: bound, never listening. */
struct closed_port {
    int fd;
    char url[96];
};

static void closed_port_open(struct closed_port *cp)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);

    cp->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(cp->fd >= 0);
    assert_int_equal(bind(cp->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(cp->fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(cp->url, sizeof(cp->url), "postgresql://postgres@127.0.0.1:%d/dealwire",
             ntohs(sa.sin_port));
}

struct worker {
    pthread_t thread;
    struct dw_db *db;
    struct dw_store *first, *second;
    int rc;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    dw_thread_set_role(DW_THREAD_WORKER);
    w->first = dw_db_store(w->db);
    w->second = dw_db_store(w->db);
    w->rc = dw_store_run(w->first, "SELECT 1", 0, NULL);
    return NULL; /* the thread's store is freed by the key's destructor */
}

static void test_one_store_per_thread(void **state)
{
    struct dw_config cfg = {0};
    struct worker w[NTHREADS];
    struct closed_port cp;
    struct dw_store_status s;
    struct dw_db *db;

    (void)state;
    closed_port_open(&cp);
    cfg.db = cp.url;
    db = dw_db_new(&cfg);
    assert_non_null(db);

    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){.db = db};
        assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(w[i].thread, NULL), 0);

    for (int i = 0; i < NTHREADS; i++) {
        assert_non_null(w[i].first);
        assert_ptr_equal(w[i].first, w[i].second); /* the same store on one thread */
        assert_int_equal(w[i].rc, -EAGAIN);
    }
    dw_store_health_read(dw_db_health(db), &s);
    assert_int_equal(s.state, DW_STORE_DOWN);
    assert_int_equal(s.outages, 1);
    assert_int_equal(s.failed_attempts, NTHREADS);
    assert_false(dw_store_health_is_ready(dw_db_health(db)));
    assert_false(dw_db_failed(db));

    dw_db_free(db);
    close(cp.fd);
}

static void never_fatal(void *arg)
{
    (void)arg;
    fail_msg("the keeper gave up on an unreachable database");
}

/* The keeper retries while the server is unreachable, and a stop wakes it from its backoff. */
static void test_keeper_stops_during_backoff(void **state)
{
    struct dw_config cfg = {0};
    struct closed_port cp;
    struct dw_store_status s;
    struct dw_db *db;
    int64_t t0;

    (void)state;
    closed_port_open(&cp);
    cfg.db = cp.url;
    cfg.load_demo_data = true;
    db = dw_db_new(&cfg);
    assert_non_null(db);
    assert_int_equal(dw_db_start(db, never_fatal, NULL), 0);
    assert_int_equal(dw_db_start(db, never_fatal, NULL), -EINVAL); /* already started */

    /* Wait for the first (refused) attempt. */
    for (int i = 0; i < 500; i++) {
        dw_store_health_read(dw_db_health(db), &s);
        if (s.state == DW_STORE_DOWN)
            break;
        usleep(10000);
    }
    assert_int_equal(s.state, DW_STORE_DOWN);
    assert_false(s.schema_ready);

    t0 = dw_now_mono_ns();
    dw_db_stop(db);
    assert_true(dw_now_mono_ns() - t0 < 500 * 1000000LL); /* not the 1 s backoff */
    dw_db_stop(db);                                       /* twice is fine */
    assert_false(dw_db_failed(db));
    dw_db_free(db);
    close(cp.fd);
}

static void test_new_without_or_with_a_bad_db(void **state)
{
    struct dw_config cfg = {0};

    (void)state;
    assert_null(dw_db_new(&cfg)); /* no database configured */
    assert_null(dw_db_new(NULL));
    cfg.db = "host=127.0.0.1 no_such_option=1";
    assert_null(dw_db_new(&cfg)); /* and one line on stderr */
    assert_false(dw_db_failed(NULL));
    dw_db_stop(NULL);
    dw_db_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_store_per_thread),
        cmocka_unit_test(test_keeper_stops_during_backoff),
        cmocka_unit_test(test_new_without_or_with_a_bad_db),
    };

    dw_log_set_level(DW_LOG_ERROR); /* the refused attempts' warnings are expected */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
