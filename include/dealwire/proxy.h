/*
 * proxy — the client's address when a load balancer or a reverse proxy stands in front of
 * the daemon (--trusted-proxies; docs/security.md, "Behind a proxy").
 *
 * A socket from a trusted proxy names its client in one of two ways, and from anyone else
 * both are ignored, so a client cannot choose the address its limits and logs go by:
 * - the PROXY protocol (HAProxy's, v1 text or v2 binary): a header before the first byte of
 *   the connection's own data, TLS's or HTTP's (dw_proxy_parse; server.c reads it off the
 *   socket before lws sees the socket's first byte);
 * - the last address of X-Forwarded-For, the one the proxy itself added: addresses before it
 *   are what the client and earlier hops claimed (dw_forwarded_last).
 *
 * Synchronization: none. The list is parsed once at start-up and read-only after; the
 * parsers are pure functions.
 */
#ifndef DEALWIRE_PROXY_H
#define DEALWIRE_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "dealwire/ipcount.h"

/* Entries --trusted-proxies may list. */
#define DW_TRUSTED_MAX 256

/* One address or network: the first bits of net (IPv4 mapped into ::ffff:0:0/96, so an IPv4
 * prefix /n is bits 96 + n). */
struct dw_cidr {
    struct dw_ip net;
    unsigned bits;
};

/* Parses a comma-separated list of addresses and networks ("10.0.0.0/8, 192.0.2.7, ::1,
 * 2001:db8::/32"; blanks around entries are ignored) into out[0..*n) (DW_TRUSTED_MAX
 * entries). Returns 0, or -EINVAL with why (size bytes) filled. */
int dw_trusted_parse(const char *text, struct dw_cidr *out, size_t *n, char *why, size_t size);

/* Is ip in one of list[0..n)? */
bool dw_trusted_has(const struct dw_cidr *list, size_t n, const struct dw_ip *ip);

/* Longest PROXY header read: v1's is at most 107 bytes; v2's is 16 and what it announces,
 * and a v2 header longer than this (TLVs no one here reads) is refused. */
#define DW_PROXY_HEADER_MAX 536

enum dw_proxy {
    DW_PROXY_NONE, /* the bytes do not begin with a PROXY signature */
    DW_PROXY_MORE, /* a header's beginning: too few bytes to tell or to read it whole */
    DW_PROXY_BAD,  /* a PROXY signature, then something malformed (or too long) */
    DW_PROXY_OK,   /* a whole header */
};

/* What a whole header says. */
struct dw_proxy_header {
    size_t len;           /* bytes it takes: the connection's own data follows */
    bool has_address;     /* false: v1 UNKNOWN, v2 LOCAL (the proxy's own health check) or a
                           * family without an IP address: the peer's address stands */
    struct dw_ip address; /* the client's (the source), when has_address */
};

/* Reads a PROXY header (v1 or v2) at the start of buf[0..n). *out is set for DW_PROXY_OK. */
enum dw_proxy dw_proxy_parse(const unsigned char *buf, size_t n, struct dw_proxy_header *out);

/* The last address of an X-Forwarded-For value (value[0..len), several headers joined by
 * commas): an IPv4 or IPv6 address, "[IPv6]" or either with a ":port", blanks around it
 * ignored. Returns 0 with *ip set, or -EINVAL when that entry is not an address (the value is
 * then no evidence of anything). */
int dw_forwarded_last(const char *value, size_t len, struct dw_ip *ip);

#endif
