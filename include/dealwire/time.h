/*
 * time — the daemon's clocks and its one time format.
 *
 * Every duration inside the daemon is an int64_t of nanoseconds: CLOCK_MONOTONIC for
 * deadlines and intervals, CLOCK_REALTIME for what is shown (timestamps on the wire, the
 * stats). Settings in seconds or milliseconds are turned into nanoseconds with the constants
 * below, not with literals. thread: any.
 */
#ifndef DEALWIRE_TIME_H
#define DEALWIRE_TIME_H

#include <stdint.h>

#define DW_NSEC_PER_SEC  1000000000LL
#define DW_NSEC_PER_MSEC 1000000LL
#define DW_NSEC_PER_USEC 1000LL

/* Length of an ISO-8601 timestamp as written by dw_time_format_iso, with its NUL. */
#define DW_TIME_ISO_LEN 32

/* thread: any. Writes realtime_ns (nanoseconds since the epoch) as
 * "2026-11-26T01:02:03.123456Z" into out. */
void dw_time_format_iso(char out[DW_TIME_ISO_LEN], int64_t realtime_ns);

/* thread: any. CLOCK_REALTIME now, in nanoseconds. */
int64_t dw_now_realtime_ns(void);

/* thread: any. CLOCK_MONOTONIC now, in nanoseconds. */
int64_t dw_now_mono_ns(void);

#endif
