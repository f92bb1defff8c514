/*
 * test_metrics — the Prometheus text writer (metrics.h): escaping in HELP and in label values,
 * number formatting, cumulative histogram buckets ending in +Inf, bucket search, the delivery
 * latency buckets of dw__metrics_written (server_int.h), and the workers' counters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dealwire/metrics.h"
#include "../../src/server_int.h"

#include <stdlib.h>
#include <string.h>

static void test_family_and_escaping(void **state)
{
    struct dw_metrics_buf b = {0};
    const char *const labels[] = {"reason", "a\\b \"c\"\nd", "kind", "x", NULL};

    (void)state;
    dw_metrics_write_family(&b, "dw_x_total", "counter", "back\\slash \"quoted\"\nnext line");
    dw_metrics_write_sample(&b, "dw_x_total", labels, 3);
    dw_metrics_write_sample(&b, "dw_y", NULL, 0.25);
    dw_metrics_write_sample(&b, "dw_z", NULL, 12345678901.0);
    assert_string_equal(b.data,
                        /* HELP escapes \ and newline, not the double quote */
                        "# HELP dw_x_total back\\\\slash \"quoted\"\\nnext line\n"
                        "# TYPE dw_x_total counter\n"
                        /* a label value escapes all three */
                        "dw_x_total{reason=\"a\\\\b \\\"c\\\"\\nd\",kind=\"x\"} 3\n"
                        "dw_y 0.25\n"
                        "dw_z 12345678901\n");
    assert_int_equal(b.len, strlen(b.data));
    free(b.data);
}

static void test_histogram_is_cumulative(void **state)
{
    static const double bounds[] = {0.5, 1, 2.5};
    const uint64_t counts[] = {1, 0, 2, 4}; /* the last: above 2.5 */
    const char *const labels[] = {"monitor", "trending", NULL};
    struct dw_metrics_buf b = {0};

    (void)state;
    dw_metrics_write_histogram(&b, "dw_h_seconds", labels, bounds, 3, counts, 12.5);
    assert_string_equal(b.data, "dw_h_seconds_bucket{monitor=\"trending\",le=\"0.5\"} 1\n"
                                "dw_h_seconds_bucket{monitor=\"trending\",le=\"1\"} 1\n"
                                "dw_h_seconds_bucket{monitor=\"trending\",le=\"2.5\"} 3\n"
                                "dw_h_seconds_bucket{monitor=\"trending\",le=\"+Inf\"} 7\n"
                                "dw_h_seconds_sum{monitor=\"trending\"} 12.5\n"
                                "dw_h_seconds_count{monitor=\"trending\"} 7\n");
    free(b.data);
    b = (struct dw_metrics_buf){0};
    dw_metrics_write_histogram(&b, "dw_u", NULL, bounds, 3, counts, 0);
    assert_non_null(strstr(b.data, "dw_u_bucket{le=\"+Inf\"} 7\ndw_u_sum 0\ndw_u_count 7\n"));
    free(b.data);
}

static void test_bucket(void **state)
{
    static const double bounds[] = {1, 10, 60};

    (void)state;
    assert_int_equal(dw_metrics_bucket(bounds, 3, 0), 0);
    assert_int_equal(dw_metrics_bucket(bounds, 3, 1), 0); /* le: the bound itself is in */
    assert_int_equal(dw_metrics_bucket(bounds, 3, 1.5), 1);
    assert_int_equal(dw_metrics_bucket(bounds, 3, 60), 2);
    assert_int_equal(dw_metrics_bucket(bounds, 3, 61), 3); /* +Inf */
}

/* Where dw__metrics_written files a latency of lat ns (a deal_alert, not replayed). */
static int latency_bucket(struct dw_server *srv, int64_t lat)
{
    struct dw_msg m = {.type = DW_MSG_DEAL_ALERT, .accepted_at = 1000};

    memset(&srv->metrics, 0, sizeof(srv->metrics));
    dw__metrics_written(srv, &m, 1000 + lat, false);
    for (int i = 0; i <= DW_LATENCY_BUCKETS; i++) {
        if (srv->metrics.latency[i])
            return i;
    }
    return -1;
}

static void test_latency_buckets(void **state)
{
    static struct dw_server srv;
    struct dw_msg pong = {.type = DW_MSG_PONG}; /* a reply: no accepted_at */
    struct dw_msg alert = {.type = DW_MSG_PRICE_ALERT, .accepted_at = 1};

    (void)state;
    /* bucket b holds latencies up to 2^(14 + b) ns, the bound included */
    assert_int_equal(latency_bucket(&srv, 0), 0);
    assert_int_equal(latency_bucket(&srv, 16384), 0);
    assert_int_equal(latency_bucket(&srv, 16385), 1);
    assert_int_equal(latency_bucket(&srv, 32768), 1);
    assert_int_equal(latency_bucket(&srv, 32769), 2);
    assert_int_equal(latency_bucket(&srv, (int64_t)1 << 33), DW_LATENCY_BUCKETS - 1);
    assert_int_equal(latency_bucket(&srv, ((int64_t)1 << 33) + 1), DW_LATENCY_BUCKETS);
    assert_int_equal(latency_bucket(&srv, INT64_MAX / 2), DW_LATENCY_BUCKETS);

    /* counted by type always; the latency only for a published message not replayed */
    memset(&srv.metrics, 0, sizeof(srv.metrics));
    dw__metrics_written(&srv, &pong, 100, false);
    dw__metrics_written(&srv, &alert, 100, true);
    assert_int_equal(srv.metrics.sent_by_type[DW_MSG_PONG], 1);
    assert_int_equal(srv.metrics.sent_by_type[DW_MSG_PRICE_ALERT], 1);
    for (int i = 0; i <= DW_LATENCY_BUCKETS; i++)
        assert_int_equal(srv.metrics.latency[i], 0);
    dw__metrics_written(&srv, &alert, 100, false);
    assert_int_equal(srv.metrics.latency[0], 1);
    assert_int_equal(srv.metrics.latency_sum_ns, 99);
}

static void test_worker_counts(void **state)
{
    const struct dw_metrics_workers *w = dw_metrics_workers_read();

    (void)state;
    dw_metrics_monitor_round(DW_METRICS_MON_TRENDING, 0, 2000000);      /* 2 ms */
    dw_metrics_monitor_round(DW_METRICS_MON_TRENDING, -11, 1);          /* -EAGAIN */
    dw_metrics_monitor_round(DW_METRICS_MON_TRENDING, -22, 7000000000); /* 7 s, failed */
    assert_int_equal(w->rounds[DW_METRICS_MON_TRENDING][DW_METRICS_OK], 1);
    assert_int_equal(w->rounds[DW_METRICS_MON_TRENDING][DW_METRICS_DB_UNAVAILABLE], 1);
    assert_int_equal(w->rounds[DW_METRICS_MON_TRENDING][DW_METRICS_FAILED], 1);
    assert_int_equal(w->round[DW_METRICS_MON_TRENDING].counts[0], 1); /* 1 ns */
    assert_int_equal(w->round[DW_METRICS_MON_TRENDING].counts[1], 1); /* 2 ms */
    assert_int_equal(w->round[DW_METRICS_MON_TRENDING].counts[DW_METRICS_WORK_BOUNDS], 1); /* 7 s */
    assert_int_equal(w->round[DW_METRICS_MON_TRENDING].sum_ns, 7002000001);
    dw_metrics_plan(DW_METRICS_PLAN_FOUND, 30000000);
    assert_int_equal(w->plans[DW_METRICS_PLAN_FOUND], 1);
    assert_int_equal(w->plan.counts[4], 1); /* 30 ms: up to 50 ms */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_escaping),
        cmocka_unit_test(test_histogram_is_cumulative),
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_latency_buckets),
        cmocka_unit_test(test_worker_counts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
