/*
 * test_monitor — the monitors without a database server: how PostgreSQL's numbers are parsed
 * (strtod, whole string, finite), the price_alert reasons (money, units, sold out), and the
 * scheduling around a round on a real worker pool and hub: no round touches the database
 * while nobody is connected or the schema is not ready, rounds do once both hold (here
 * against a closed port: -EAGAIN, skipped quietly), and stopping is prompt.
 *
 * The rounds' SQL against a real PostgreSQL (the rules at their edges, announce-once across
 * restarts and nodes, outages, hostile strings, 100,000 watches) is tested in
 * tests/integration/test_monitors.py.
 */
#include "../../src/monitor_watch.c"
#include "../../src/hub_int.h"
#include "dealwire/config.h"
#include "dealwire/db.h"
#include "dealwire/log.h"
#include "dealwire/monitor.h"
#include "dealwire/msg.h"
#include "dealwire/time.h"
#include "dealwire/rcu.h"
#include "dealwire/thread.h"
#include "dealwire/worker.h"
#include "dealwire/wake.h"

#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Pure helpers
 * ------------------------------------------------------------------------------------------ */

static void test_money(void **state)
{
    char buf[32];

    (void)state;
    format_money(buf, sizeof(buf), 30);
    assert_string_equal(buf, "$30");
    format_money(buf, sizeof(buf), 30.5);
    assert_string_equal(buf, "$30.50");
    format_money(buf, sizeof(buf), 0.07);
    assert_string_equal(buf, "$0.07");
    format_money(buf, sizeof(buf), 150.0 - 120.01); /* 29.99 in binary: rounded to cents */
    assert_string_equal(buf, "$29.99");
    format_money(buf, sizeof(buf), 0);
    assert_string_equal(buf, "$0");
    format_money(buf, sizeof(buf), 9999999999.99);
    assert_string_equal(buf, "$9999999999.99");
}

static void test_reasons(void **state)
{
    char buf[96];

    (void)state;
    price_reason(buf, sizeof(buf), 120, 150);
    assert_string_equal(buf, "Price dropped by $30");
    price_reason(buf, sizeof(buf), 149.5, 150);
    assert_string_equal(buf, "Price dropped by $0.50");
    price_reason(buf, sizeof(buf), 150, 150);
    assert_string_equal(buf, "Price is at your threshold of $150");
    price_reason(buf, sizeof(buf), 99.99, 99.99);
    assert_string_equal(buf, "Price is at your threshold of $99.99");

    stock_reason(buf, sizeof(buf), 5, "hotel");
    assert_string_equal(buf, "Only 5 rooms left");
    stock_reason(buf, sizeof(buf), 1, "hotel");
    assert_string_equal(buf, "Only 1 room left");
    stock_reason(buf, sizeof(buf), 3, "flight");
    assert_string_equal(buf, "Only 3 seats left");
    stock_reason(buf, sizeof(buf), 1, "flight");
    assert_string_equal(buf, "Only 1 seat left");
    stock_reason(buf, sizeof(buf), 2, "package");
    assert_string_equal(buf, "Only 2 left");
    stock_reason(buf, sizeof(buf), 0, "hotel");
    assert_string_equal(buf, "Sold out");
}

/* ------------------------------------------------------------------------------------------
 * Scheduling, on a real pool and hub, against a closed port
 * ------------------------------------------------------------------------------------------ */

static _Atomic unsigned wakes;

static void count_wake(void *arg);
static const struct dw_wake counted_wake = {count_wake, NULL};

static void count_wake(void *arg)
{
    (void)arg;
    atomic_fetch_add(&wakes, 1);
}

static unsigned long failed_attempts(struct dw_db *db)
{
    struct dw_store_status s;

    dw_store_health_read(dw_db_health(db), &s);
    return s.failed_attempts;
}

static void test_rounds_only_with_clients_and_a_schema(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    struct dw_config cfg = {0};
    struct dw_monitors *mons;
    struct dw_workers *pool;
    struct dw_conn *conn;
    struct dw_hub *hub;
    struct dw_db *db;
    char url[96];
    int fd, i;
    int64_t t0;

    (void)state;
    /* A loopback port that refuses connections: bound, never listening. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(url, sizeof(url), "postgresql://postgres@127.0.0.1:%d/dealwire", ntohs(sa.sin_port));

    cfg.db = url;
    cfg.port = 8000;
    cfg.hot_deal_interval = cfg.trending_interval = cfg.watch_interval = 1;
    db = dw_db_new(&cfg);
    assert_non_null(db);
    hub = dw_hub_new(&counted_wake);
    pool = dw_workers_start(2);
    assert_non_null(pool);
    assert_null(dw_monitors_start(NULL, db, hub, pool));
    assert_null(dw_monitors_start(&cfg, NULL, hub, pool));
    mons = dw_monitors_start(&cfg, db, hub, pool);
    assert_non_null(mons);

    /* Nobody connected for over a period: no round reached the store. */
    usleep(1300 * 1000);
    assert_int_equal(failed_attempts(db), 0);

    /* A client, but no schema yet: still nothing. */
    conn = dw__hub_conn_new(hub);
    dw__hub_add(hub, conn, "alice");
    usleep(1300 * 1000);
    assert_int_equal(failed_attempts(db), 0);

    /* Both: the rounds try the database (refused: -EAGAIN, skipped quietly). */
    dw_store_health_set_schema(dw_db_health(db), 4);
    for (i = 0; i < 500 && failed_attempts(db) == 0; i++)
        usleep(10000);
    assert_true(failed_attempts(db) >= 1);

    t0 = dw_now_mono_ns();
    dw_monitors_stop(mons);
    assert_true(dw_now_mono_ns() - t0 < 500 * 1000000LL);
    dw_monitors_stop(NULL);
    assert_int_equal(atomic_load(&wakes), 0); /* nothing was sent */

    dw__hub_remove(hub, conn);
    dw_workers_stop(pool); /* the workers' stores go with their threads */
    dw_rcu_barrier();
    dw_hub_free(hub);
    dw_db_free(db);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_rounds_only_with_clients_and_a_schema),
    };
    int rc;

    dw_thread_set_role(DW_THREAD_IO); /* the test thread adds and removes the connection */
    dw_rcu_register();
    dw_log_set_level(DW_LOG_ERROR); /* the refused attempts' warning is expected */
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    dw_rcu_barrier();
    dw_rcu_unregister();
    return rc;
}
