/* test_ipcount — the per-address socket counts: add, remove, growth, and removal in the
 * middle of probe runs checked against a plain array model. */
#include "dealwire/ipcount.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static struct dw_ip ip4(uint32_t host_order)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    struct dw_ip ip;

    in.sin_addr.s_addr = htonl(host_order);
    assert_int_equal(dw_ip_from_sockaddr((struct sockaddr *)&in, sizeof(in), &ip), 0);
    return ip;
}

static void test_format_and_families(void **state)
{
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    struct sockaddr sa = {.sa_family = AF_UNIX};
    struct dw_ip ip = ip4(0x7f000001), ip6;
    char text[DW_IP_TEXT_MAX];

    (void)state;
    dw_ip_format(&ip, text);
    assert_string_equal(text, "127.0.0.1");
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", &in6.sin6_addr), 1);
    assert_int_equal(dw_ip_from_sockaddr((struct sockaddr *)&in6, sizeof(in6), &ip6), 0);
    dw_ip_format(&ip6, text);
    assert_string_equal(text, "2001:db8::7");
    assert_int_equal(dw_ip_from_sockaddr(&sa, sizeof(sa), &ip), -EAFNOSUPPORT);
    /* A truncated address is refused, not read past its end. */
    assert_int_equal(dw_ip_from_sockaddr((struct sockaddr *)&in6, 8, &ip6), -EAFNOSUPPORT);
}

static void test_add_remove(void **state)
{
    struct dw_ipcount *t = dw_ipcount_new();
    struct dw_ip a = ip4(0x0a000001), b = ip4(0x0a000002);

    (void)state;
    assert_int_equal(dw_ipcount_get(t, &a), 0);
    assert_int_equal(dw_ipcount_add(t, &a), 1);
    assert_int_equal(dw_ipcount_add(t, &a), 2);
    assert_int_equal(dw_ipcount_add(t, &b), 1);
    assert_int_equal(dw_ipcount_addresses(t), 2);
    dw_ipcount_remove(t, &a);
    assert_int_equal(dw_ipcount_get(t, &a), 1);
    dw_ipcount_remove(t, &a);
    assert_int_equal(dw_ipcount_get(t, &a), 0);
    assert_int_equal(dw_ipcount_addresses(t), 1);
    assert_int_equal(dw_ipcount_get(t, &b), 1);
    dw_ipcount_remove(t, &b);
    assert_int_equal(dw_ipcount_addresses(t), 0);
    dw_ipcount_free(t);
}

/* Many addresses (growth several times over), then removals in a scattered order that hit
 * the middle of probe runs: every count must match a plain array after every step. */
static void test_against_model(void **state)
{
    enum { N = 5000 };
    static unsigned model[N];
    struct dw_ipcount *t = dw_ipcount_new();
    uint64_t x = 88172645463325252ULL;
    size_t live = 0;

    (void)state;
    memset(model, 0, sizeof(model));
    for (int step = 0; step < 200000; step++) {
        unsigned k;
        struct dw_ip ip;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        k = (unsigned)(x % N);
        ip = ip4(0xc0a80000u + k * 7919u); /* spread, some sharing hash buckets */
        if (model[k] > 0 && (x >> 32) % 3 == 0) {
            dw_ipcount_remove(t, &ip);
            if (--model[k] == 0)
                live--;
        } else {
            if (model[k]++ == 0)
                live++;
            assert_int_equal(dw_ipcount_add(t, &ip), model[k]);
        }
        if (step % 997 == 0) {
            for (unsigned j = 0; j < N; j++) {
                struct dw_ip q = ip4(0xc0a80000u + j * 7919u);

                assert_int_equal(dw_ipcount_get(t, &q), model[j]);
            }
        }
        assert_int_equal(dw_ipcount_addresses(t), live);
    }
    dw_ipcount_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_families),
        cmocka_unit_test(test_add_remove),
        cmocka_unit_test(test_against_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
