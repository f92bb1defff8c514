/*
 * ipcount — DESIGN: a power-of-two table of (address, count) slots with linear probing,
 * grown to twice its size when more than half full. Removal uses backward-shift deletion,
 * so there are no tombstones and a lookup stops at the first empty slot. An empty slot has
 * count 0. Hashing: FNV-1a over the 16 address bytes.
 */
#include "dealwire/ipcount.h"
#include "dealwire/mem.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_SLOTS 64u

struct slot {
    struct dw_ip ip;
    unsigned count; /* 0: empty */
};

struct dw_ipcount {
    struct slot *slots;
    size_t mask; /* slots - 1 */
    size_t used;
};

static size_t hash_ip(const struct dw_ip *ip)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < sizeof(ip->addr); i++) {
        h ^= ip->addr[i];
        h *= 1099511628211ULL;
    }
    return (size_t)(h ^ (h >> 32));
}

struct dw_ipcount *dw_ipcount_new(void)
{
    struct dw_ipcount *t = dw_xcalloc(1, sizeof(*t));

    t->slots = dw_xcalloc(INITIAL_SLOTS, sizeof(*t->slots));
    t->mask = INITIAL_SLOTS - 1;
    return t;
}

void dw_ipcount_free(struct dw_ipcount *t)
{
    if (!t)
        return;
    free(t->slots);
    free(t);
}

int dw_ip_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct dw_ip *ip)
{
    memset(ip, 0, sizeof(*ip));
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        ip->addr[10] = 0xff;
        ip->addr[11] = 0xff;
        memcpy(ip->addr + 12, &in->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(ip->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -EAFNOSUPPORT;
}

int dw_ip_from_peer(int fd, struct dw_ip *ip)
{
    struct sockaddr_storage ss = {0}; /* AF_UNSPEC unless getpeername() writes it */
    socklen_t len = sizeof(ss);

    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return -errno;
    return dw_ip_from_sockaddr((const struct sockaddr *)&ss, len, ip);
}

void dw_ip_format(const struct dw_ip *ip, char *buf)
{
    static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(ip->addr, v4_prefix, sizeof(v4_prefix)) == 0)
        inet_ntop(AF_INET, ip->addr + 12, buf, DW_IP_TEXT_MAX);
    else
        inet_ntop(AF_INET6, ip->addr, buf, DW_IP_TEXT_MAX);
}

/* The slot holding ip, or the empty slot where it would go. */
static struct slot *find(const struct dw_ipcount *t, const struct dw_ip *ip)
{
    size_t i = hash_ip(ip) & t->mask;

    while (t->slots[i].count && memcmp(&t->slots[i].ip, ip, sizeof(*ip)) != 0)
        i = (i + 1) & t->mask;
    return &t->slots[i];
}

static void grow(struct dw_ipcount *t)
{
    struct slot *old = t->slots;
    size_t n = t->mask + 1;

    t->slots = dw_xcalloc(2 * n, sizeof(*t->slots));
    t->mask = 2 * n - 1;
    for (size_t i = 0; i < n; i++) {
        if (old[i].count)
            *find(t, &old[i].ip) = old[i];
    }
    free(old);
}

unsigned dw_ipcount_get(const struct dw_ipcount *t, const struct dw_ip *ip)
{
    return find(t, ip)->count;
}

unsigned dw_ipcount_add(struct dw_ipcount *t, const struct dw_ip *ip)
{
    struct slot *s = find(t, ip);

    if (s->count == 0) {
        if (2 * (t->used + 1) > t->mask + 1) {
            grow(t);
            s = find(t, ip);
        }
        s->ip = *ip;
        t->used++;
    }
    return ++s->count;
}

void dw_ipcount_remove(struct dw_ipcount *t, const struct dw_ip *ip)
{
    struct slot *s = find(t, ip);
    size_t hole, i;

    assert(s->count > 0);
    if (s->count == 0 || --s->count > 0)
        return;
    t->used--;
    /* Backward-shift: move later slots of the same probe run into the hole when their home
     * slot is at or before it (cyclically), so that every lookup still finds them. */
    hole = (size_t)(s - t->slots);
    for (i = (hole + 1) & t->mask; t->slots[i].count; i = (i + 1) & t->mask) {
        size_t home = hash_ip(&t->slots[i].ip) & t->mask;

        if (((i - home) & t->mask) >= ((i - hole) & t->mask)) {
            t->slots[hole] = t->slots[i];
            t->slots[i].count = 0;
            hole = i;
        }
    }
}

size_t dw_ipcount_addresses(const struct dw_ipcount *t)
{
    return t->used;
}
