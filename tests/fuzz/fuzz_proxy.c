/*
 * fuzz_proxy — libFuzzer target: the client's address behind a proxy (src/proxy.c). The first
 * byte picks the parser, the rest is its input:
 *   0: a PROXY protocol header (dw_proxy_parse), as a trusted proxy's socket begins;
 *   1: an X-Forwarded-For value (dw_forwarded_last): all but its last entry is whatever the
 *      client wrote;
 *   2: a --trusted-proxies list (dw_trusted_parse).
 *
 * Beyond "no crash, no leak, no undefined behaviour", each input checks that:
 *   - a whole header takes at most the bytes given and at most DW_PROXY_HEADER_MAX, and every
 *     shorter prefix of it is DW_PROXY_MORE (the daemon then waits, it never reads half a
 *     header); a v1 header ends with CRLF;
 *   - an address X-Forwarded-For yields, written out by dw_ip_format, reads back the same;
 *   - a list that parses has 1 to DW_TRUSTED_MAX entries of at most 128 bits, each of which
 *     holds its own network address.
 * The input is passed as libFuzzer holds it, with no copy and no NUL after it (a header is
 * read from a socket, a header value from lws's buffer), so ASan sees any read past its end.
 */
#include "dealwire/ipcount.h"
#include "dealwire/proxy.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void header(const uint8_t *p, size_t n)
{
    struct dw_proxy_header h, again;
    enum dw_proxy r = dw_proxy_parse(p, n, &h);

    if (r != DW_PROXY_OK)
        return;
    assert(h.len <= n && h.len <= DW_PROXY_HEADER_MAX);
    if (p[0] == 'P')
        assert(h.len >= 2 && p[h.len - 2] == '\r' && p[h.len - 1] == '\n');
    for (size_t k = 0; k < h.len; k++)
        assert(dw_proxy_parse(p, k, &again) == DW_PROXY_MORE);
    assert(dw_proxy_parse(p, h.len, &again) == DW_PROXY_OK && again.len == h.len);
}

static void forwarded(const uint8_t *p, size_t n)
{
    struct dw_ip ip, back;
    char text[DW_IP_TEXT_MAX];

    if (dw_forwarded_last((const char *)p, n, &ip) != 0)
        return;
    dw_ip_format(&ip, text);
    assert(dw_forwarded_last(text, strlen(text), &back) == 0);
    assert(memcmp(ip.addr, back.addr, sizeof(ip.addr)) == 0);
}

static void trusted(const uint8_t *p, size_t n)
{
    static struct dw_cidr list[DW_TRUSTED_MAX];
    char *text = malloc(n + 1), why[160];
    size_t count;

    assert(text);
    memcpy(text, p, n);
    text[n] = '\0';
    if (dw_trusted_parse(text, list, &count, why, sizeof(why)) == 0) {
        assert(count >= 1 && count <= DW_TRUSTED_MAX);
        for (size_t i = 0; i < count; i++) {
            assert(list[i].bits <= 128);
            assert(dw_trusted_has(list, count, &list[i].net));
        }
    } else {
        assert(why[0] != '\0');
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        header(data + 1, size - 1);
        break;
    case 1:
        forwarded(data + 1, size - 1);
        break;
    default:
        trusted(data + 1, size - 1);
        break;
    }
    return 0;
}
