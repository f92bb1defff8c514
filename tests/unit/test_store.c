/*
 * test_store — the parts of the store that need no database server: the backoff sequence,
 * which SQLSTATEs count as "try again later", error lines flattened to one line, connection
 * string checks, the shared health (one transition per outage, however many stores report),
 * and a real libpq attempt against a closed loopback port (refused at once): -EAGAIN, the
 * health goes down, and the next call inside the backoff sends nothing.
 *
 * What needs a server (queries, transactions, reconnection) is in
 * tests/integration/test_db.py, against a private PostgreSQL.
 */
#include "../../src/store.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Pure helpers
 * ------------------------------------------------------------------------------------------ */

static void test_backoff_doubles_to_the_cap(void **state)
{
    const int64_t s = 1000000000;
    const int64_t want[] = {2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s};
    int64_t cur = DW_STORE_BACKOFF_MIN_NS;

    (void)state;
    assert_int_equal(DW_STORE_BACKOFF_MIN_NS, 1 * s);
    assert_int_equal(DW_STORE_BACKOFF_MAX_NS, 30 * s);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        cur = next_backoff(cur);
        assert_int_equal(cur, want[i]);
    }
    assert_int_equal(next_backoff(0), DW_STORE_BACKOFF_MIN_NS);
}

static void test_transient_sqlstates(void **state)
{
    static const char *const transient[] = {"08000", "08006", "08001", "53300", "53100", "57P01",
                                            "57P03", "57014", "40001", "40P01", "55P03", NULL};
    static const char *const permanent[] = {"42601", "42P01", "42P07", "23505",  "23503", "22P02",
                                            "25P02", "XX000", "0800",  "080000", "",      NULL};

    (void)state;
    for (size_t i = 0; transient[i]; i++) {
        if (!is_transient_sqlstate(transient[i]))
            fail_msg("%s should be transient", transient[i]);
    }
    for (size_t i = 0; permanent[i]; i++) {
        if (is_transient_sqlstate(permanent[i]))
            fail_msg("\"%s\" should not be transient", permanent[i]);
    }
    assert_false(is_transient_sqlstate(NULL));
}

static void test_flatten(void **state)
{
    char small[8], buf[128];

    (void)state;
    flatten(buf, sizeof(buf),
            "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n"
            "\tIs the server running on that host?\n");
    assert_string_equal(buf, "connection to server at \"127.0.0.1\", port 1 failed: Connection "
                             "refused Is the server running on that host?");
    flatten(buf, sizeof(buf), "  \n a  \t\r\n b \n");
    assert_string_equal(buf, "a b");
    flatten(buf, sizeof(buf), NULL);
    assert_string_equal(buf, "");
    flatten(small, sizeof(small), "abcdefghijk");
    assert_string_equal(small, "abcdefg");
    flatten(small, sizeof(small), "abcdef gh");
    assert_string_equal(small, "abcdef");
}

static void test_check_conninfo(void **state)
{
    char why[256];

    (void)state;
    assert_int_equal(dw_store_check_conninfo("postgresql://u@127.0.0.1:5432/db", why, sizeof(why)),
                     0);
    assert_int_equal(dw_store_check_conninfo("postgres://h/db?sslmode=disable", why, sizeof(why)),
                     0);
    assert_int_equal(dw_store_check_conninfo("host=127.0.0.1 port=5432 dbname=x", why, sizeof(why)),
                     0);
    assert_int_equal(dw_store_check_conninfo("dealwire", why, sizeof(why)), 0); /* a db name */

    why[0] = '\0';
    assert_int_equal(dw_store_check_conninfo("host=h bogus=1", why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "bogus"));
    assert_null(strchr(why, '\n'));
    assert_int_equal(dw_store_check_conninfo("postgresql://h/db?bogus=1", why, sizeof(why)),
                     -EINVAL);
    assert_int_equal(dw_store_check_conninfo("host='unterminated", why, sizeof(why)), -EINVAL);
    assert_int_equal(dw_store_check_conninfo("", why, sizeof(why)), -EINVAL);
    assert_int_equal(dw_store_check_conninfo(NULL, why, sizeof(why)), -EINVAL);
}

/* ------------------------------------------------------------------------------------------
 * Health
 * ------------------------------------------------------------------------------------------ */

static void test_health_starts_unknown(void **state)
{
    struct dw_store_health h;
    struct dw_store_status s;

    (void)state;
    dw_store_health_init(&h);
    dw_store_health_read(&h, &s);
    assert_int_equal(s.state, DW_STORE_UNKNOWN);
    assert_false(s.schema_ready);
    assert_int_equal(s.schema_version, 0);
    assert_int_equal(s.since_ns, 0);
    assert_int_equal(s.outages, 0);
    assert_int_equal(s.failed_attempts, 0);
    assert_false(dw_store_health_is_ready(&h));

    dw_store_health_set_schema(&h, 3);
    dw_store_health_read(&h, &s);
    assert_true(s.schema_ready);
    assert_int_equal(s.schema_version, 3);
    assert_false(dw_store_health_is_ready(&h)); /* the schema alone is not ready: never reached */
    atomic_store(&h._state, DW_STORE_UP);
    assert_true(dw_store_health_is_ready(&h));
}

/* Several stores failing while the database is down make one outage and one epoch bump. */
static void test_one_transition_per_outage(void **state)
{
    struct dw_store_health h;
    struct dw_store_status s;
    struct dw_store *a, *b;

    (void)state;
    dw_store_health_init(&h);
    a = dw_store_new("dbname=x", &h);
    b = dw_store_new("dbname=x", &h);
    assert_non_null(a);
    assert_non_null(b);
    snprintf(a->err, sizeof(a->err), "refused");
    snprintf(b->err, sizeof(b->err), "refused");

    report_down(a, "unreachable", true);
    report_down(b, "unreachable", true);
    report_down(a, "unreachable", true);
    dw_store_health_read(&h, &s);
    assert_int_equal(s.state, DW_STORE_DOWN);
    assert_int_equal(s.outages, 1);
    assert_int_equal(s.failed_attempts, 3);
    assert_int_equal(atomic_load(&h._epoch), 1);
    assert_true(s.since_ns > 0);

    /* Back up (as report_up would leave it), then down again: a second outage. */
    atomic_store(&h._state, DW_STORE_UP);
    report_down(b, "connection lost", false);
    dw_store_health_read(&h, &s);
    assert_int_equal(s.outages, 2);
    assert_int_equal(s.failed_attempts, 3);
    assert_int_equal(atomic_load(&h._epoch), 2);

    dw_store_free(a);
    dw_store_free(b);
    dw_store_free(NULL);
}

/* ------------------------------------------------------------------------------------------
 * A real connection attempt, refused
 * ------------------------------------------------------------------------------------------ */

/* A loopback TCP port with nothing listening: bound (so nobody else takes it) but never put
 * in listen(), so a connect() is refused at once. Returns the socket; *port gets the port. */
static int closed_port(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_refused_connection_backs_off(void **state)
{
    struct dw_store_health h;
    struct dw_store_status s;
    struct dw_store *st;
    char conninfo[128];
    PGresult *res = (PGresult *)&res; /* not NULL: the call must clear it */
    int port, fd;
    int64_t wait;

    (void)state;
    dw_thread_set_role(DW_THREAD_WORKER);
    fd = closed_port(&port);
    snprintf(conninfo, sizeof(conninfo), "postgresql://postgres@127.0.0.1:%d/dealwire", port);
    dw_store_health_init(&h);
    st = dw_store_new(conninfo, &h);

    assert_int_equal(dw_store_exec(st, &res, "SELECT 1", 0, NULL), -EAGAIN);
    assert_null(res);
    assert_false(dw_store_is_connected(st));
    assert_non_null(strstr(dw_store_error(st), "refused"));
    dw_store_health_read(&h, &s);
    assert_int_equal(s.state, DW_STORE_DOWN);
    assert_int_equal(s.failed_attempts, 1);

    /* Inside the backoff: refused without an attempt. */
    wait = dw_store_retry_in_ns(st);
    assert_true(wait > 0 && wait <= DW_STORE_BACKOFF_MIN_NS);
    assert_int_equal(dw_store_run(st, "SELECT 1", 0, NULL), -EAGAIN);
    assert_int_equal(dw_store_exec_script(st, "SELECT 1; SELECT 2"), -EAGAIN);
    assert_non_null(strstr(dw_store_error(st), "next attempt in"));
    dw_store_health_read(&h, &s);
    assert_int_equal(s.failed_attempts, 1);
    assert_int_equal(s.outages, 1);

    /* Bad arguments are refused before anything else. */
    assert_int_equal(dw_store_exec(NULL, &res, "SELECT 1", 0, NULL), -EINVAL);
    assert_int_equal(dw_store_exec(st, NULL, "SELECT 1", 0, NULL), -EINVAL);
    assert_int_equal(dw_store_exec(st, &res, NULL, 0, NULL), -EINVAL);
    assert_int_equal(dw_store_exec(st, &res, "SELECT $1", 1, NULL), -EINVAL);
    assert_int_equal(dw_store_exec_script(st, NULL), -EINVAL);
    assert_int_equal(dw_store_tx(st, NULL, NULL), -EINVAL);

    dw_store_free(st);
    close(fd);
}

static void test_parse_double(void **state)
{
    double v = -1;

    (void)state;
    assert_int_equal(dw_store_parse_double("299.00", &v), 0);
    assert_true(v == 299.0);
    assert_int_equal(dw_store_parse_double("0", &v), 0);
    assert_true(v == 0.0);
    assert_int_equal(dw_store_parse_double("1234567890.12", &v), 0);
    assert_true(v == 1234567890.12);
    assert_int_equal(dw_store_parse_double("-5", &v), 0); /* the caller checks the sign */
    assert_true(v == -5.0);

    v = 42;
    assert_int_equal(dw_store_parse_double("", &v), -EINVAL);
    assert_int_equal(dw_store_parse_double(NULL, &v), -EINVAL);
    assert_int_equal(dw_store_parse_double("12abc", &v), -EINVAL);
    assert_int_equal(dw_store_parse_double("abc", &v), -EINVAL);
    assert_int_equal(dw_store_parse_double("1.5 ", &v), -EINVAL);
    assert_int_equal(dw_store_parse_double("NaN", &v), -EINVAL);
    assert_int_equal(dw_store_parse_double("inf", &v), -EINVAL);
    assert_int_equal(dw_store_parse_double("1e999", &v), -EINVAL);
    assert_true(v == 42); /* untouched on failure */
}

static void test_parse_int(void **state)
{
    long long v = -1;

    (void)state;
    assert_int_equal(dw_store_parse_int("0", 0, 10, &v), 0);
    assert_true(v == 0);
    assert_int_equal(dw_store_parse_int("10", 0, 10, &v), 0);
    assert_true(v == 10);
    assert_int_equal(dw_store_parse_int("-3", -5, 5, &v), 0);
    assert_true(v == -3);
    assert_int_equal(dw_store_parse_int("9223372036854775807", 0, LLONG_MAX, &v), 0);
    assert_true(v == LLONG_MAX);

    v = 42;
    assert_int_equal(dw_store_parse_int("11", 0, 10, &v), -EINVAL); /* over max */
    assert_int_equal(dw_store_parse_int("-1", 0, 10, &v), -EINVAL); /* under min */
    assert_int_equal(dw_store_parse_int("9223372036854775808", 0, LLONG_MAX, &v), -EINVAL);
    assert_int_equal(dw_store_parse_int("", 0, 10, &v), -EINVAL);
    assert_int_equal(dw_store_parse_int(NULL, 0, 10, &v), -EINVAL);
    assert_int_equal(dw_store_parse_int("3x", 0, 10, &v), -EINVAL); /* atoi would say 3 */
    assert_int_equal(dw_store_parse_int("x", 0, 10, &v), -EINVAL);  /* atoi would say 0 */
    assert_int_equal(dw_store_parse_int(" 3", 0, 10, &v), -EINVAL);
    assert_int_equal(dw_store_parse_int("+3", 0, 10, &v), -EINVAL);
    assert_int_equal(dw_store_parse_int("1.5", 0, 10, &v), -EINVAL);
    assert_true(v == 42); /* untouched on failure */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_parse_double),
        cmocka_unit_test(test_backoff_doubles_to_the_cap),
        cmocka_unit_test(test_transient_sqlstates),
        cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_check_conninfo),
        cmocka_unit_test(test_health_starts_unknown),
        cmocka_unit_test(test_one_transition_per_outage),
        cmocka_unit_test(test_refused_connection_backs_off),
    };

    dw_log_set_level(DW_LOG_ERROR); /* the refused attempt's warning is expected */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
