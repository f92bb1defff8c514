/*
 * hist — a fixed-size log-linear latency histogram (HDR style): exact below 128, then 64
 * linear sub-buckets per power of two, so every recorded value is kept within 1/64 (1.6 %)
 * relative error. Recording is an index computation and one increment: no allocation, no
 * sorting. Values are nanoseconds; anything past ~137 s lands in the last bucket.
 */
#ifndef DWB_HIST_H
#define DWB_HIST_H

#include <stdint.h>

#define DWB_HIST_SUB_BITS  7
#define DWB_HIST_SUB       (1u << DWB_HIST_SUB_BITS)
#define DWB_HIST_HALF      (DWB_HIST_SUB / 2)
#define DWB_HIST_MAX_SHIFT 30
#define DWB_HIST_BUCKETS   (DWB_HIST_SUB + DWB_HIST_MAX_SHIFT * DWB_HIST_HALF)

struct dwb_hist {
    uint64_t count;
    uint64_t min, max;
    uint64_t sum;
    uint64_t counts[DWB_HIST_BUCKETS];
};

/* Empties h (caller's storage). */
void dwb_hist_init(struct dwb_hist *h);

/* Adds one value (ns). */
void dwb_hist_record(struct dwb_hist *h, uint64_t value);

/* Returns the value at quantile q (0..1) with the histogram's precision (the middle of the
 * bucket that holds it, never above the largest value recorded), or 0 when h is empty. */
uint64_t dwb_hist_quantile(const struct dwb_hist *h, double q);

#endif
