/* test_peek — what a new socket is from its first bytes (dw_peek_request): API requests of
 * every method and path prefix, WebSocket upgrades and other paths, a TLS ClientHello, and
 * every prefix of a request line too short to tell. */
#include "dealwire/peek.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static enum dw_peek peek(const char *s)
{
    return dw_peek_request(s, strlen(s));
}

static void test_api_requests(void **state)
{
    (void)state;
    assert_int_equal(peek("POST /api/websocket/broadcast HTTP/1.1\r\n"), DW_PEEK_API);
    assert_int_equal(peek("GET /api/websocket/stats HTTP/1.1\r\n"), DW_PEEK_API);
    assert_int_equal(peek("DELETE /api/x HTTP/1.1\r\n"), DW_PEEK_API);
    assert_int_equal(peek("GET /healthz HTTP/1.1\r\n"), DW_PEEK_API);
    assert_int_equal(peek("HEAD /readyz HTTP/1.1\r\n"), DW_PEEK_API);
    assert_int_equal(peek("OPTIONS /healthz HTTP/1.1\r\n"), DW_PEEK_API);
    assert_int_equal(peek("GET /metrics HTTP/1.1\r\n"), DW_PEEK_API); /* a Prometheus scrape */
    /* decided by the path's first bytes: the rest of the line need not have come */
    assert_int_equal(peek("POST /api/"), DW_PEEK_API);
}

static void test_everything_else(void **state)
{
    /* record header, handshake header, version 3.3, then the random bytes */
    static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                                "abcdefghijklmnopqrstuvwxyz012345";

    (void)state;
    assert_int_equal(peek("GET /ws/events?user_id=u1 HTTP/1.1\r\n"), DW_PEEK_OTHER);
    assert_int_equal(peek("GET /ws/publish HTTP/1.1\r\n"), DW_PEEK_OTHER);
    assert_int_equal(peek("GET / HTTP/1.1\r\n"), DW_PEEK_OTHER);
    assert_int_equal(peek("GET /app.js HTTP/1.1\r\n"), DW_PEEK_OTHER);
    assert_int_equal(peek("GET /apix HTTP/1.1\r\n"), DW_PEEK_OTHER);
    assert_int_equal(peek("GET /mx HTTP/1.1\r\n"), DW_PEEK_OTHER);
    assert_int_equal(peek(" /api/x HTTP/1.1\r\n"), DW_PEEK_OTHER); /* no method */
    /* a TLS ClientHello: no space in the first DW_PEEK_HEAD bytes */
    assert_true(sizeof(hello) - 1 > DW_PEEK_HEAD);
    assert_int_equal(dw_peek_request(hello, sizeof(hello) - 1), DW_PEEK_OTHER);
    assert_int_equal(dw_peek_request(hello, 20), DW_PEEK_MORE); /* until DW_PEEK_HEAD came */
    /* a method longer than the head: nothing more will tell */
    assert_int_equal(peek("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA /api/"), DW_PEEK_OTHER);
}

/* Every prefix of an API request line and of an upgrade that stops before the path decides
 * is DW_PEEK_MORE; the whole line decides. */
static void test_prefixes_wait_for_more(void **state)
{
    static const char *const lines[] = {"POST /api/websocket/broadcast HTTP/1.1\r\n",
                                        "GET /healthz HTTP/1.1\r\n", "HEAD /readyz HTTP/1.1\r\n",
                                        "GET /metrics HTTP/1.1\r\n"};

    (void)state;
    assert_int_equal(dw_peek_request("", 0), DW_PEEK_MORE);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        const char *sp = strchr(lines[i], ' ');
        const char *path_end = strchr(sp + 1, ' ');
        /* "/api/" decides at its slash; "/healthz", "/readyz", "/metrics" at their last letter */
        size_t decided = (size_t)(sp + 1 - lines[i]) +
                         (strncmp(sp + 1, "/api/", 5) == 0 ? 5 : (size_t)(path_end - sp - 1));

        for (size_t n = 0; n < decided; n++)
            assert_int_equal(dw_peek_request(lines[i], n), DW_PEEK_MORE);
        assert_int_equal(dw_peek_request(lines[i], decided), DW_PEEK_API);
    }
    /* an upgrade is told apart at its path's second byte */
    assert_int_equal(peek("GET /"), DW_PEEK_MORE);
    assert_int_equal(peek("GET /w"), DW_PEEK_OTHER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_requests),
        cmocka_unit_test(test_everything_else),
        cmocka_unit_test(test_prefixes_wait_for_more),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
