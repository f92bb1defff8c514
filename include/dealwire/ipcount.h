/*
 * ipcount — how many sockets each client address holds, for --max-connections-per-ip.
 *
 * Debian's libwebsockets is built without its peer limits, so the server counts for itself:
 * an address is counted when lws accepts a socket from it and uncounted when lws destroys
 * that socket (server.c). A table of addresses to counts, open addressing with linear
 * probing; an address whose count drops to zero leaves the table, so it holds only the
 * addresses connected now.
 *
 * Synchronization: none. One thread (the I/O thread) owns a table.
 */
#ifndef DEALWIRE_IPCOUNT_H
#define DEALWIRE_IPCOUNT_H

#include <stdbool.h>
#include <stddef.h>

#include <sys/socket.h>

/* A client address: IPv6, or IPv4 mapped into ::ffff:0:0/96. */
struct dw_ip {
    unsigned char addr[16];
};

/* Longest text dw_ip_format writes, with its NUL. */
#define DW_IP_TEXT_MAX 46

struct dw_ipcount;

/* Makes an empty table. */
struct dw_ipcount *dw_ipcount_new(void);

/* Frees t (NULL is fine). */
void dw_ipcount_free(struct dw_ipcount *t);

/* Sets *ip from an IPv4 or IPv6 socket address. Returns 0, or -EAFNOSUPPORT for another
 * family (e.g. a Unix socket). */
int dw_ip_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct dw_ip *ip);

/* Sets *ip to the peer address of connected socket fd. Returns 0 or -errno. */
int dw_ip_from_peer(int fd, struct dw_ip *ip);

/* Writes ip as text ("192.0.2.1", "2001:db8::1") into buf (DW_IP_TEXT_MAX bytes). */
void dw_ip_format(const struct dw_ip *ip, char *buf);

/* How many sockets ip holds now. */
unsigned dw_ipcount_get(const struct dw_ipcount *t, const struct dw_ip *ip);

/* Counts one more socket for ip. Returns the new count. */
unsigned dw_ipcount_add(struct dw_ipcount *t, const struct dw_ip *ip);

/* Counts one socket fewer for ip, which must have one. */
void dw_ipcount_remove(struct dw_ipcount *t, const struct dw_ip *ip);

/* Addresses that hold at least one socket. */
size_t dw_ipcount_addresses(const struct dw_ipcount *t);

#endif
