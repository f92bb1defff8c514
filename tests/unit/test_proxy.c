/* test_proxy — the client's address behind a proxy: --trusted-proxies' list (addresses,
 * networks of both families, what it refuses), PROXY protocol v1 and v2 headers as HAProxy
 * writes them (whole, every prefix, malformed), and X-Forwarded-For's last hop. */
#include "dealwire/proxy.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static struct dw_ip ip_of(const char *text)
{
    struct dw_ip ip;

    /* through the X-Forwarded-For parser: one entry is an address and nothing else */
    assert_int_equal(dw_forwarded_last(text, strlen(text), &ip), 0);
    return ip;
}

static void assert_ip(const struct dw_ip *ip, const char *text)
{
    char buf[DW_IP_TEXT_MAX];

    dw_ip_format(ip, buf);
    assert_string_equal(buf, text);
}

static void test_trusted_list(void **state)
{
    struct dw_cidr list[DW_TRUSTED_MAX];
    size_t n;
    char why[128];

    (void)state;
    assert_int_equal(dw_trusted_parse(" 10.0.0.0/8,192.0.2.7 , ::1, 2001:db8::/32,172.16.5.9/12",
                                      list, &n, why, sizeof(why)),
                     0);
    assert_int_equal(n, 5);
    struct dw_ip in[] = {ip_of("10.200.3.4"), ip_of("192.0.2.7"), ip_of("::1"),
                         ip_of("2001:db8:ffff::9"), ip_of("172.31.255.255")};
    struct dw_ip out[] = {ip_of("11.0.0.1"),    ip_of("192.0.2.8"),  ip_of("::2"),
                          ip_of("2001:db9::1"), ip_of("172.32.0.0"), ip_of("::ffff:0:a00:1")};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        assert_true(dw_trusted_has(list, n, &in[i]));
    for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++)
        assert_false(dw_trusted_has(list, n, &out[i]));
    /* an IPv4 entry matches the IPv4-mapped form, which is how a dual-stack socket shows it */
    struct dw_ip mapped = ip_of("::ffff:10.1.1.1");
    assert_true(dw_trusted_has(list, n, &mapped));
    /* /0: everyone of the family */
    assert_int_equal(dw_trusted_parse("0.0.0.0/0", list, &n, why, sizeof(why)), 0);
    assert_true(dw_trusted_has(list, n, &in[0]));
    assert_false(dw_trusted_has(list, n, &in[2]));

    static const char *const bad[] = {
        "",     "10.0.0.0/33", "::/129",       "10.0.0.0/",    "10.0.0.x",
        "a,,b", "1.2.3.4,",    "10.0.0.0/8/8", "host.example", "10.0.0.0/-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(dw_trusted_parse(bad[i], list, &n, why, sizeof(why)), -EINVAL);
        assert_true(why[0] != '\0');
    }
}

static void test_proxy_v1(void **state)
{
    static const char tcp4[] = "PROXY TCP4 198.51.100.22 203.0.113.7 35646 80\r\nGET / HTTP/1.1";
    static const char tcp6[] = "PROXY TCP6 2001:db8::22 2001:db8::1 35646 443\r\n\x16\x03\x01";
    static const char unknown[] = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    struct dw_proxy_header h;
    size_t head = strchr(tcp4, '\n') + 1 - tcp4;

    (void)state;
    assert_int_equal(dw_proxy_parse((const unsigned char *)tcp4, sizeof(tcp4) - 1, &h),
                     DW_PROXY_OK);
    assert_int_equal(h.len, head);
    assert_true(h.has_address);
    assert_ip(&h.address, "198.51.100.22");
    assert_int_equal(dw_proxy_parse((const unsigned char *)tcp6, sizeof(tcp6) - 1, &h),
                     DW_PROXY_OK);
    assert_ip(&h.address, "2001:db8::22");
    assert_int_equal(dw_proxy_parse((const unsigned char *)unknown, sizeof(unknown) - 1, &h),
                     DW_PROXY_OK);
    assert_false(h.has_address);
    assert_int_equal(h.len, sizeof(unknown) - 1);
    /* every prefix of the line: wait for more */
    for (size_t n = 0; n < head - 1; n++)
        assert_int_equal(dw_proxy_parse((const unsigned char *)tcp4, n, &h), DW_PROXY_MORE);

    static const char *const bad[] = {
        "PROXY TCP4 198.51.100.22 203.0.113.7 35646\r\n",       /* a port missing */
        "PROXY TCP4 2001:db8::1 203.0.113.7 35646 80\r\n",      /* family and address */
        "PROXY TCP5 198.51.100.22 203.0.113.7 35646 80\r\n",    /* no such family */
        "PROXY TCP4 198.51.100.22 203.0.113.7 35646 65536\r\n", /* port too big */
        "PROXY TCP4 198.51.100.22  203.0.113.7 35646 80\r\n",   /* two spaces */
        "PROXY TCP4 198.51.100.22 203.0.113.7 35646 80 x\r\n",  /* more words */
        "PROXY \r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dw_proxy_parse((const unsigned char *)bad[i], strlen(bad[i]), &h),
                         DW_PROXY_BAD);
    /* no CRLF within 107 bytes */
    char longline[200];
    static const char start[] = "PROXY TCP4 ";
    memset(longline, '1', sizeof(longline));
    memcpy(longline, start, sizeof(start) - 1); /* no NUL: the parser is given a length */
    assert_int_equal(dw_proxy_parse((const unsigned char *)longline, sizeof(longline), &h),
                     DW_PROXY_BAD);
    /* not PROXY at all: a request, a ClientHello, PROXY in the wrong case */
    assert_int_equal(dw_proxy_parse((const unsigned char *)"GET / HTTP/1.1\r\n", 16, &h),
                     DW_PROXY_NONE);
    assert_int_equal(dw_proxy_parse((const unsigned char *)"\x16\x03\x01\x02", 4, &h),
                     DW_PROXY_NONE);
    assert_int_equal(dw_proxy_parse((const unsigned char *)"proxy TCP4", 10, &h), DW_PROXY_NONE);
}

/* A v2 header as HAProxy's send-proxy-v2 writes it: PROXY command, family, addresses, ports,
 * then tlv_len bytes of TLVs. Returns its length. */
static size_t v2(unsigned char *buf, unsigned cmd, unsigned fam, const void *src, size_t alen,
                 size_t tlv_len)
{
    static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                          0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    size_t body = (alen ? 2 * alen + 4 : 0) + tlv_len;

    memcpy(buf, sig, 12);
    buf[12] = (unsigned char)(0x20 | cmd);
    buf[13] = (unsigned char)fam;
    buf[14] = (unsigned char)(body >> 8);
    buf[15] = (unsigned char)body;
    memset(buf + 16, 0x7f, body);
    if (alen)
        memcpy(buf + 16, src, alen);
    return 16 + body;
}

static void test_proxy_v2(void **state)
{
    static const unsigned char src4[4] = {198, 51, 100, 22};
    static const unsigned char src6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x22};
    unsigned char buf[DW_PROXY_HEADER_MAX + 64];
    struct dw_proxy_header h;
    size_t n;

    (void)state;
    n = v2(buf, 1, 0x11, src4, 4, 0);
    assert_int_equal(n, 28);
    assert_int_equal(dw_proxy_parse(buf, n + 5, &h), DW_PROXY_OK);
    assert_int_equal(h.len, 28);
    assert_true(h.has_address);
    assert_ip(&h.address, "198.51.100.22");
    for (size_t k = 0; k < n; k++)
        assert_int_equal(dw_proxy_parse(buf, k, &h), DW_PROXY_MORE);

    n = v2(buf, 1, 0x21, src6, 16, 20); /* with TLVs, which are skipped */
    assert_int_equal(dw_proxy_parse(buf, n, &h), DW_PROXY_OK);
    assert_int_equal(h.len, n);
    assert_ip(&h.address, "2001:db8::22");

    n = v2(buf, 0, 0x00, NULL, 0, 0); /* LOCAL: the proxy's own health check */
    assert_int_equal(dw_proxy_parse(buf, n, &h), DW_PROXY_OK);
    assert_false(h.has_address);
    assert_int_equal(h.len, 16);

    n = v2(buf, 1, 0x11, src4, 4, 0);
    buf[12] = 0x11; /* version 1 in a v2 header */
    assert_int_equal(dw_proxy_parse(buf, n, &h), DW_PROXY_BAD);
    n = v2(buf, 2, 0x11, src4, 4, 0); /* no command 2 */
    assert_int_equal(dw_proxy_parse(buf, n, &h), DW_PROXY_BAD);
    n = v2(buf, 1, 0x11, src4, 2, 0); /* too short for two IPv4 addresses and ports */
    assert_int_equal(dw_proxy_parse(buf, n, &h), DW_PROXY_BAD);
    /* longer than is read: refused from its first 16 bytes */
    assert_true(v2(buf, 1, 0x11, src4, 4, DW_PROXY_HEADER_MAX) > DW_PROXY_HEADER_MAX);
    assert_int_equal(dw_proxy_parse(buf, 16, &h), DW_PROXY_BAD);
}

static void test_forwarded_last(void **state)
{
    struct dw_ip ip;
    static const struct {
        const char *value, *last;
    } good[] = {
        {"203.0.113.9", "203.0.113.9"},
        {"1.1.1.1, 10.0.0.2,198.51.100.4 ", "198.51.100.4"},
        {"6.6.6.6 , 2001:db8::7", "2001:db8::7"},
        {"[2001:db8::8]:443", "2001:db8::8"},
        {"[2001:db8::9]", "2001:db8::9"},
        {"198.51.100.5:5060", "198.51.100.5"},
    };
    static const char *const bad[] = {"",          "1.1.1.1, unknown", "1.1.1.1,",      "_hidden",
                                      "[1.2.3.4]", "1.2.3.4:99999",    "2001:db8::1]:4"};

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(dw_forwarded_last(good[i].value, strlen(good[i].value), &ip), 0);
        assert_ip(&ip, good[i].last);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dw_forwarded_last(bad[i], strlen(bad[i]), &ip), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trusted_list),
        cmocka_unit_test(test_proxy_v1),
        cmocka_unit_test(test_proxy_v2),
        cmocka_unit_test(test_forwarded_last),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
