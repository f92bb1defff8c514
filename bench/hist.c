/*
 * hist — DESIGN: a log-linear histogram as in HdrHistogram. Bucket i < 128 holds exactly the
 * value i. Above that, a value v with its highest set bit at position b is shifted right by
 * s = b - 6, which leaves a mantissa in [64, 128); bucket = 128 + (s - 1) * 64 + mantissa - 64.
 * So each power of two is split into 64 equal buckets, and the table has a fixed size.
 */
#include "hist.h"

#include <string.h>

void dwb_hist_init(struct dwb_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v)
{
    unsigned shift;

    if (v < DWB_HIST_SUB)
        return (unsigned)v;
    shift = (unsigned)(63 - __builtin_clzll(v)) - (DWB_HIST_SUB_BITS - 1);
    if (shift > DWB_HIST_MAX_SHIFT)
        return DWB_HIST_BUCKETS - 1;
    return DWB_HIST_SUB + (shift - 1) * DWB_HIST_HALF + (unsigned)(v >> shift) - DWB_HIST_HALF;
}

/* Lowest value of bucket i, and its width. */
static uint64_t bucket_low(unsigned i, uint64_t *width)
{
    unsigned k, shift;

    if (i < DWB_HIST_SUB) {
        *width = 1;
        return i;
    }
    k = i - DWB_HIST_SUB;
    shift = k / DWB_HIST_HALF + 1;
    *width = (uint64_t)1 << shift;
    return (uint64_t)(k % DWB_HIST_HALF + DWB_HIST_HALF) << shift;
}

void dwb_hist_record(struct dwb_hist *h, uint64_t value)
{
    h->counts[bucket_of(value)]++;
    h->count++;
    h->sum += value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

uint64_t dwb_hist_quantile(const struct dwb_hist *h, double q)
{
    uint64_t rank, seen = 0, width, v;

    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    /* The smallest value with at least q of all values at or below it. */
    rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < DWB_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen < rank)
            continue;
        v = bucket_low(i, &width) + width / 2;
        if (v > h->max)
            v = h->max;
        if (v < h->min)
            v = h->min;
        return v;
    }
    return h->max;
}
