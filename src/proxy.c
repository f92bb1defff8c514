/*
 * proxy — DESIGN: the trusted list is an array searched from the start (a few entries,
 * searched once per accepted socket from an address). The PROXY parsers follow HAProxy's
 * specification (doc/proxy-protocol.txt): v1 is one line "PROXY TCP4|TCP6|UNKNOWN ... CRLF" of
 * at most 107 bytes; v2 is a 12-byte signature, version/command, family, a big-endian length,
 * then the addresses and TLVs. Anything malformed after a signature is DW_PROXY_BAD: the
 * connection is closed, as HAProxy closes it when it receives one.
 */
#include "dealwire/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const unsigned char V2_SIG[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char V1_SIG[] = "PROXY ";
#define V1_MAX 107

static void map_v4(const void *in4, struct dw_ip *ip)
{
    memset(ip->addr, 0, 10);
    ip->addr[10] = ip->addr[11] = 0xff;
    memcpy(ip->addr + 12, in4, 4);
}

/* text[0..len) as an IPv4 or IPv6 address (nothing around it). *v4: which it was. */
static int parse_ip(const char *text, size_t len, struct dw_ip *ip, bool *v4)
{
    char buf[DW_IP_TEXT_MAX];
    unsigned char raw[16];

    if (len == 0 || len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, raw) == 1) {
        map_v4(raw, ip);
        *v4 = true;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, ip->addr) == 1) {
        *v4 = false;
        return 0;
    }
    return -EINVAL;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* [s, e) without the blanks around it. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && blank(**s))
        ++*s;
    while (*e > *s && blank((*e)[-1]))
        --*e;
}

static int parse_cidr(const char *s, const char *e, struct dw_cidr *out)
{
    const char *slash = memchr(s, '/', (size_t)(e - s));
    bool v4;
    unsigned bits, max;

    if (parse_ip(s, (size_t)((slash ? slash : e) - s), &out->net, &v4) < 0)
        return -EINVAL;
    max = v4 ? 32 : 128;
    bits = max;
    if (slash) {
        const char *d = slash + 1;

        if (d == e || e - d > 3)
            return -EINVAL;
        bits = 0;
        for (; d < e; d++) {
            if (*d < '0' || *d > '9')
                return -EINVAL;
            bits = bits * 10 + (unsigned)(*d - '0');
        }
        if (bits > max)
            return -EINVAL;
    }
    out->bits = v4 ? 96 + bits : bits;
    /* the host bits are cleared, so that 10.1.2.3/8 means 10.0.0.0/8 */
    for (unsigned i = out->bits; i < 128; i++)
        out->net.addr[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
    return 0;
}

int dw_trusted_parse(const char *text, struct dw_cidr *out, size_t *n, char *why, size_t size)
{
    const char *p = text;

    *n = 0;
    do {
        const char *s = p, *e = strchr(p, ',');

        if (!e)
            e = p + strlen(p);
        p = *e ? e + 1 : NULL;
        trim(&s, &e);
        if (s == e) {
            snprintf(why, size, "an empty entry");
            return -EINVAL;
        }
        if (*n == DW_TRUSTED_MAX) {
            snprintf(why, size, "more than %d entries", DW_TRUSTED_MAX);
            return -EINVAL;
        }
        if (parse_cidr(s, e, &out[*n]) < 0) {
            snprintf(why, size, "\"%.*s\" is not an address or address/prefix-length", (int)(e - s),
                     s);
            return -EINVAL;
        }
        ++*n;
    } while (p);
    return 0;
}

bool dw_trusted_has(const struct dw_cidr *list, size_t n, const struct dw_ip *ip)
{
    for (size_t i = 0; i < n; i++) {
        unsigned full = list[i].bits / 8, rest = list[i].bits % 8;

        if (memcmp(list[i].net.addr, ip->addr, full) != 0)
            continue;
        if (rest == 0 || ((list[i].net.addr[full] ^ ip->addr[full]) & (0xff00u >> rest)) == 0)
            return true;
    }
    return false;
}

/* The next space-separated word of a v1 line at *p (before end): [*s, *e). */
static bool word(const char **p, const char *end, const char **s, const char **e)
{
    const char *sp = memchr(*p, ' ', (size_t)(end - *p));

    *s = *p;
    *e = sp ? sp : end;
    *p = sp ? sp + 1 : end;
    return *e > *s;
}

static bool port_valid(const char *s, const char *e)
{
    unsigned v = 0;

    if (e - s < 1 || e - s > 5)
        return false;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    return v <= 65535;
}

static enum dw_proxy parse_v1(const char *buf, size_t n, struct dw_proxy_header *out)
{
    const char *crlf = NULL, *p, *s, *e;
    struct dw_ip dst;
    bool v4, v4d;

    for (size_t i = 0; i + 1 < n && i + 1 < V1_MAX; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n') {
            crlf = buf + i;
            break;
        }
    }
    if (!crlf)
        return n >= V1_MAX ? DW_PROXY_BAD : DW_PROXY_MORE;
    out->len = (size_t)(crlf + 2 - buf);
    out->has_address = false;
    p = buf + sizeof(V1_SIG) - 1;
    if (!word(&p, crlf, &s, &e))
        return DW_PROXY_BAD;
    if (e - s == 7 && memcmp(s, "UNKNOWN", 7) == 0)
        return DW_PROXY_OK; /* the rest of the line is to be ignored */
    if (e - s != 4 || (memcmp(s, "TCP4", 4) != 0 && memcmp(s, "TCP6", 4) != 0))
        return DW_PROXY_BAD;
    bool want_v4 = s[3] == '4';

    if (!word(&p, crlf, &s, &e) || parse_ip(s, (size_t)(e - s), &out->address, &v4) < 0 ||
        v4 != want_v4)
        return DW_PROXY_BAD;
    if (!word(&p, crlf, &s, &e) || parse_ip(s, (size_t)(e - s), &dst, &v4d) < 0 || v4d != want_v4)
        return DW_PROXY_BAD;
    if (!word(&p, crlf, &s, &e) || !port_valid(s, e))
        return DW_PROXY_BAD;
    if (!word(&p, crlf, &s, &e) || !port_valid(s, e) || p != crlf)
        return DW_PROXY_BAD;
    out->has_address = true;
    return DW_PROXY_OK;
}

static enum dw_proxy parse_v2(const unsigned char *buf, size_t n, struct dw_proxy_header *out)
{
    size_t len;
    unsigned cmd, family;

    if (n < 16)
        return DW_PROXY_MORE;
    if ((buf[12] >> 4) != 2)
        return DW_PROXY_BAD;
    cmd = buf[12] & 0x0f;
    family = buf[13] >> 4;
    len = (size_t)buf[14] << 8 | buf[15];
    if (cmd > 1 || family > 3 || (buf[13] & 0x0f) > 2 || 16 + len > DW_PROXY_HEADER_MAX)
        return DW_PROXY_BAD;
    if (n < 16 + len)
        return DW_PROXY_MORE;
    out->len = 16 + len;
    out->has_address = false;
    if (cmd == 0)
        return DW_PROXY_OK; /* LOCAL: the proxy speaks for itself */
    if (family == 1) {      /* AF_INET: source, destination, ports */
        if (len < 12)
            return DW_PROXY_BAD;
        map_v4(buf + 16, &out->address);
        out->has_address = true;
    } else if (family == 2) { /* AF_INET6 */
        if (len < 36)
            return DW_PROXY_BAD;
        memcpy(out->address.addr, buf + 16, 16);
        out->has_address = true;
    } else if (family == 3 && len < 216) {
        return DW_PROXY_BAD; /* AF_UNIX: two 108-byte paths, no IP address */
    }
    return DW_PROXY_OK;
}

enum dw_proxy dw_proxy_parse(const unsigned char *buf, size_t n, struct dw_proxy_header *out)
{
    size_t v1 = sizeof(V1_SIG) - 1;

    if (memcmp(buf, V2_SIG, n < sizeof(V2_SIG) ? n : sizeof(V2_SIG)) == 0)
        return n < sizeof(V2_SIG) ? DW_PROXY_MORE : parse_v2(buf, n, out);
    if (memcmp(buf, V1_SIG, n < v1 ? n : v1) == 0)
        return n < v1 ? DW_PROXY_MORE : parse_v1((const char *)buf, n, out);
    return DW_PROXY_NONE;
}

int dw_forwarded_last(const char *value, size_t len, struct dw_ip *ip)
{
    const char *end = value + len, *s = end, *e = end;
    bool v4;

    while (s > value && s[-1] != ',')
        s--;
    trim(&s, &e);
    if (s < e && *s == '[') { /* [IPv6] or [IPv6]:port */
        const char *close = memchr(s, ']', (size_t)(e - s));

        if (!close || (close + 1 != e && (close[1] != ':' || !port_valid(close + 2, e))))
            return -EINVAL;
        return parse_ip(s + 1, (size_t)(close - s - 1), ip, &v4) == 0 && !v4 ? 0 : -EINVAL;
    }
    if (parse_ip(s, (size_t)(e - s), ip, &v4) == 0)
        return 0;
    /* IPv4:port (one colon: an IPv6 address has more) */
    const char *colon = memchr(s, ':', (size_t)(e - s));

    if (colon && !memchr(colon + 1, ':', (size_t)(e - colon - 1)) && port_valid(colon + 1, e) &&
        parse_ip(s, (size_t)(colon - s), ip, &v4) == 0 && v4)
        return 0;
    return -EINVAL;
}
